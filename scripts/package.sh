#!/usr/bin/env bash
# Builds what operators install, from a checkout:
#
#   syncs_<v>_<arch>.deb        sync_server, proxy, syncs-check, syncs-status in
#                               /usr/bin, man pages, the systemd units, /etc/syncs
#                               (rmt.ini, proxy.ini, rules/: conffiles), the
#                               `syncs` user (postinst), docs
#   libintc1_<v>_<arch>.deb     libintc.so.1 (SONAME libintc.so.1)
#   libintc-dev_<v>_<arch>.deb  intc_cli.h, libintc.a, libintc.so, intc.pc
#   intc-<v>-cp310-abi3-*.whl   the Python library (intc, intc_mg), one wheel
#                               for CPython 3.10 and later
#
#   scripts/package.sh [--out DIR] [--revision N] [--no-wheel] [--fast]
#
# --out: where the packages go (default <cargo target dir>/packages).
# --revision: the Debian revision, <version>-<revision> (default 1).
# --fast: xz -1 instead of dpkg-deb's -6: the same files in .debs about a
# fifth larger, compressed several times faster (the tests use it).
#
# The daemons are the release build `scripts/test.sh` makes, with the same
# command, so after the tests they are not compiled again; libintc is
# `cargo build --release -p intc` (see below); the wheel is `maturin build
# --release`. The .debs are laid out here and made with
# dpkg-deb (docs/ARCHITECTURE.md, "Choices of crates", says why not
# cargo-deb). Needs dpkg-dev, help2man and patchelf
# (scripts/install-deps.sh installs them). docs/operations.md, Install.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022

out=""
revision=1
wheel=1
level=6
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --revision) revision=$2; shift 2 ;;
        --no-wheel) wheel=0; shift ;;
        --fast) level=1; shift ;;
        *) echo "usage: $0 [--out DIR] [--revision N] [--no-wheel] [--fast]" >&2; exit 2 ;;
    esac
done
[[ $revision =~ ^[0-9][0-9a-z.+~]*$ ]] || { echo "bad --revision: $revision" >&2; exit 2; }

for tool in dpkg-deb dpkg-shlibdeps dpkg-architecture help2man patchelf strip gzip; do
    command -v "$tool" >/dev/null || {
        echo "$tool is missing: run scripts/install-deps.sh (dpkg-dev, help2man, patchelf)" >&2
        exit 1
    }
done

# The C library's ABI: the SONAME's number and the runtime package's name
# (libintc1). Raise both when intc_cli.h changes incompatibly.
SOMAJOR=1
SONAME=libintc.so.$SOMAJOR
# The daemons' package, and the units it installs (all of configs/systemd).
UNITS=$(cd configs/systemd && ls -- *.service | tr '\n' ' ')
UNITS=${UNITS% }

upstream=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
[[ -n $upstream ]] || { echo "no [workspace.package] version in Cargo.toml" >&2; exit 1; }
version=$upstream-$revision
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null)
maintainer=${DEB_MAINTAINER:-syncs maintainers <syncs@example.invalid>}
# Reproducible dates (files, changelog, man pages): the commit's time. Not
# exported: build scripts (the cc crate's) track SOURCE_DATE_EPOCH, and a
# change would rebuild half the workspace.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
# The copyright years: the first commit's to this one's.
first=$( (git log --max-parents=0 --format=%cd --date=format:%Y HEAD 2>/dev/null || true) | sort -n | sed -n 1p)
years=$(date -u -d "@$epoch" +%Y)
[[ -z $first || $first == "$years" ]] || years=$first-$years

echo "== build (release; the command scripts/test.sh uses, so nothing is rebuilt after it)"
cargo build --release --workspace --exclude intc-python
# Then libintc on its own, as docs/clients.md builds it: in the workspace
# build cargo unifies features, so libintc.a carries the engine's runtime
# (tokio, the Redis and Mongo drivers; 69 MB stripped instead of 18). Only
# the engine, the client and libintc are compiled again, once.
cargo build --release -p intc
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bin=$target/release
out=${out:-$target/packages}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "$target/package.XXXXXX")
trap 'rm -rf "$work"' EXIT

# @KEY@ placeholders of the templates in packaging/deb.
fill() {
    sed -e "s|@VERSION@|$version|g" -e "s|@UPSTREAM@|$upstream|g" -e "s|@ARCH@|$arch|g" \
        -e "s|@MAINTAINER@|$maintainer|g" -e "s|@UNITS@|$UNITS|g" -e "s|@SOMAJOR@|$SOMAJOR|g" \
        -e "s|@SHLIBS@|${shlibs:-}|g" -e "s|@SIZE@|${size:-}|g" -e "s|@YEARS@|$years|g" "$1"
}

# The shared libraries the ELF files need, as Depends. dpkg-shlibdeps reads
# debian/control and wants the files in debian/<package>/, where the
# packages are laid out.
mkdir -p "$work/debian"
printf 'Source: syncs\n\nPackage: syncs\nArchitecture: any\n\nPackage: libintc%s\nArchitecture: any\n' \
    "$SOMAJOR" > "$work/debian/control"
shlibdeps() {
    (cd "$work" && dpkg-shlibdeps -O "${@/#/-e}") | sed -n 's/^shlibs:Depends=//p'
}

# /usr/share/doc/<package>: copyright and a Debian changelog, as dh makes them.
docs() {
    local pkg=$1 doc=$2/usr/share/doc/$1
    install -d "$doc"
    fill packaging/deb/copyright > "$doc/copyright"
    {
        printf '%s (%s) unstable; urgency=medium\n\n' "$pkg" "$version"
        printf '  * Built from syncs commit %s by scripts/package.sh.\n\n' "$commit"
        printf ' -- %s  %s\n' "$maintainer" "$(date -u -R -d "@$epoch")"
    } | gzip -9n > "$doc/changelog.Debian.gz"
}

# Control files, checksums, dates, then the .deb.
finish() {
    local pkg=$1 root=$2
    install -d "$root/DEBIAN"
    size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
    fill "packaging/deb/$pkg.control" > "$root/DEBIAN/control"
    local f
    for f in postinst prerm postrm; do
        if [[ -f packaging/deb/$pkg.$f ]]; then
            fill "packaging/deb/$pkg.$f" > "$root/DEBIAN/$f"
            chmod 0755 "$root/DEBIAN/$f"
        fi
    done
    for f in shlibs triggers; do
        if [[ -f packaging/deb/$pkg.$f ]]; then
            fill "packaging/deb/$pkg.$f" > "$root/DEBIAN/$f"
        fi
    done
    if [[ -d $root/etc ]]; then
        (cd "$root" && find etc -type f | sort | sed 's|^|/|') > "$root/DEBIAN/conffiles"
    fi
    # md5sums of everything but the conffiles, which dpkg tracks itself.
    (cd "$root" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\n' | LC_ALL=C sort \
        | while IFS= read -r p; do md5sum "$p"; done) > "$root/DEBIAN/md5sums"
    find "$root" -exec touch -h -d "@$epoch" {} +
    SOURCE_DATE_EPOCH=$epoch dpkg-deb --root-owner-group -Zxz -z"$level" --build "$root" "$out/${pkg}_${version}_${arch}.deb" >/dev/null
    echo "   $out/${pkg}_${version}_${arch}.deb"
}

echo "== syncs (the daemons)"
root=$work/debian/syncs
install -d "$root/DEBIAN"   # dpkg-shlibdeps finds the package by it
install -d "$root/usr/bin" "$root/usr/share/man/man1" "$root/lib/systemd/system" \
    "$root/etc/syncs/rules" "$root/usr/share/doc/syncs/examples/rules"
for b in sync_server proxy syncs-check syncs-status; do
    [[ -x $bin/$b ]] || { echo "$bin/$b is missing" >&2; exit 1; }
    # What dh_strip does to an executable.
    strip --remove-section=.comment --remove-section=.note -o "$root/usr/bin/$b" "$bin/$b"
    chmod 0755 "$root/usr/bin/$b"
    # The man page is the --help text (clap's `about` is its NAME line).
    about=$("$bin/$b" --help | sed -n '1{s/\.$//;p;}')
    [[ -n $about ]] || { echo "$b --help starts with an empty line" >&2; exit 1; }
    SOURCE_DATE_EPOCH=$epoch help2man --no-info --no-discard-stderr --section 1 --source "syncs $upstream" \
        --version-string "$upstream" --name "$about" --output "$work/$b.1" "$bin/$b"
    gzip -9n < "$work/$b.1" > "$root/usr/share/man/man1/$b.1.gz"
done
# The units of configs/systemd, which name /usr/local/bin (a from-source
# install); the package's binaries are in /usr/bin.
for u in $UNITS; do
    sed 's|/usr/local/bin/|/usr/bin/|g' "configs/systemd/$u" > "$root/lib/systemd/system/$u"
    if grep -q /usr/local/ "$root/lib/systemd/system/$u"; then
        echo "$u still names /usr/local" >&2; exit 1
    fi
done
# configs/rmt.ini with its paths for /etc/syncs: the rules directory beside
# it, dead letters in the state directory (writable under ProtectSystem=strict).
sed -e 's|^rules = \.\./rules/default\.sync$|rules = /etc/syncs/rules|' \
    -e 's|^dead_letter = \.\./var/dead-letter\.jsonl$|dead_letter = /var/lib/syncs/dead-letter.jsonl|' \
    configs/rmt.ini > "$root/etc/syncs/rmt.ini"
grep -qx 'rules = /etc/syncs/rules' "$root/etc/syncs/rmt.ini" \
    && grep -qx 'dead_letter = /var/lib/syncs/dead-letter.jsonl' "$root/etc/syncs/rmt.ini" \
    || { echo "configs/rmt.ini changed: update its rules/dead_letter lines in $0" >&2; exit 1; }
install -m 0644 configs/proxy.ini "$root/etc/syncs/proxy.ini"
install -m 0644 rules/default.sync "$root/etc/syncs/rules/default.sync"
install -m 0644 README.md docs/operations.md docs/rules.md docs/migrating.md docs/reliability.md \
    docs/protocol.md docs/spool.md "$root/usr/share/doc/syncs/"
install -m 0644 rules/examples/* "$root/usr/share/doc/syncs/examples/rules/"
docs syncs "$root"
shlibs=$(shlibdeps $(cd "$work" && echo debian/syncs/usr/bin/*))
finish syncs "$root"

echo "== libintc$SOMAJOR (the C library)"
[[ -f $bin/libintc.so && -f $bin/libintc.a ]] || { echo "$bin/libintc.so or libintc.a is missing" >&2; exit 1; }
root=$work/debian/libintc$SOMAJOR
install -d "$root/DEBIAN"   # dpkg-shlibdeps finds the package by it
libdir=/usr/lib/$multiarch
install -d "$root$libdir"
# What dh_strip does to a shared library; then the SONAME, which the
# release build leaves out (in-tree users link target/release/libintc.so
# as it is: docs/ARCHITECTURE.md, "Choices of crates").
strip --remove-section=.comment --remove-section=.note --strip-unneeded \
    -o "$root$libdir/$SONAME" "$bin/libintc.so"
patchelf --set-soname "$SONAME" "$root$libdir/$SONAME"
chmod 0644 "$root$libdir/$SONAME"
docs "libintc$SOMAJOR" "$root"
shlibs=$(shlibdeps "debian/libintc$SOMAJOR$libdir/$SONAME")
finish "libintc$SOMAJOR" "$root"

echo "== libintc-dev (header, static library, pkg-config)"
root=$work/debian/libintc-dev
install -d "$root/DEBIAN"
# bindings/c/install.sh writes the header and intc.pc, as for a from-source install.
DESTDIR=$root INTC_LIB_DIR=$bin LIBDIR=$libdir sh bindings/c/install.sh /usr >/dev/null
rm "$root$libdir/libintc.so"
ln -s "$SONAME" "$root$libdir/libintc.so"
strip --strip-debug --remove-section=.comment --remove-section=.note --enable-deterministic-archives \
    "$root$libdir/libintc.a"
install -d "$root/usr/share/doc/libintc-dev/examples"
install -m 0644 bindings/c/README.md "$root/usr/share/doc/libintc-dev/README.md"
install -m 0644 docs/clients.md "$root/usr/share/doc/libintc-dev/clients.md"
install -m 0644 bindings/c/examples/*.c "$root/usr/share/doc/libintc-dev/examples/"
docs libintc-dev "$root"
shlibs=""
finish libintc-dev "$root"

if [[ $wheel == 1 ]]; then
    echo "== intc wheel (maturin, abi3)"
    command -v maturin >/dev/null || { echo "maturin is missing: run scripts/install-deps.sh" >&2; exit 1; }
    rm -f "$out"/intc-*.whl
    maturin build --quiet --release -m bindings/python/Cargo.toml --out "$out" >&2
    whl=$(ls "$out"/intc-*.whl)
    [[ $whl == *-abi3-* ]] || { echo "$whl is not an abi3 wheel" >&2; exit 1; }
    echo "   $whl"
fi
