#!/bin/sh
# Installs libintc under PREFIX: PREFIX/lib/libintc.so and libintc.a,
# PREFIX/include/intc_cli.h and PREFIX/lib/pkgconfig/intc.pc, so that
#
#   cc app.c $(pkg-config --cflags --libs intc)
#
# works (with PKG_CONFIG_PATH=PREFIX/lib/pkgconfig for a private prefix).
#
#   bindings/c/install.sh PREFIX
#
# The libraries come from $INTC_LIB_DIR, else <repo>/target/release; they
# are built there (`cargo build --release -p intc`) when missing. DESTDIR is
# honoured (files go to $DESTDIR$PREFIX, the .pc file names PREFIX). LIBDIR
# (absolute) puts the libraries and pkgconfig/ elsewhere than PREFIX/lib,
# e.g. /usr/lib/x86_64-linux-gnu (scripts/package.sh, for libintc-dev).
set -eu
if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 PREFIX" >&2
    exit 2
fi
case "$1" in
    /*) prefix=$1 ;;
    *) prefix=$(cd "$1" 2>/dev/null && pwd || echo "$PWD/$1") ;;
esac
root=$(cd "$(dirname "$0")/../.." && pwd)
libdir_src=${INTC_LIB_DIR:-$root/target/release}
if [ ! -f "$libdir_src/libintc.so" ] || [ ! -f "$libdir_src/libintc.a" ]; then
    (cd "$root" && cargo build --release -p intc)
fi
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)
[ -n "$version" ] || version=0.0.0

libdir=${LIBDIR:-$prefix/lib}
case "$libdir" in
    "$prefix"/*) pc_libdir="\${exec_prefix}${libdir#"$prefix"}" ;;
    /*) pc_libdir=$libdir ;;
    *) echo "LIBDIR must be an absolute path" >&2; exit 2 ;;
esac

dest=${DESTDIR:-}$prefix
destlib=${DESTDIR:-}$libdir
install -d "$destlib" "$destlib/pkgconfig" "$dest/include"
install -m 0755 "$libdir_src/libintc.so" "$destlib/libintc.so"
install -m 0644 "$libdir_src/libintc.a" "$destlib/libintc.a"
install -m 0644 "$root/bindings/c/include/intc_cli.h" "$dest/include/intc_cli.h"
cat > "$destlib/pkgconfig/intc.pc" <<PC
prefix=$prefix
exec_prefix=\${prefix}
libdir=$pc_libdir
includedir=\${prefix}/include

Name: intc
Description: syncs C client library: Redis commands and MongoDB writes to the local proxy
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -lintc
Libs.private: -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
PC
echo "installed libintc $version into $dest"
