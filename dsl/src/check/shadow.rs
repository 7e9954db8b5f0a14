//! "Can never match", as pure set logic: a rule reduced to its [`Shape`]
//! (ranges, command sets, analysed patterns), and whether an earlier shape
//! takes every operation a later one would. No diagnostics here.

use std::collections::HashSet;

use crate::ast::*;
use crate::commands::{self, Group};
use crate::pattern::{covers, Analyzed, PatternSrc};

/// A union of inclusive ranges, merged and sorted.
pub(super) fn merge(ranges: &[NumRange]) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = ranges.iter().map(|r| (r.lo, r.hi)).collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn ranges_cover(a: &[(u64, u64)], b: &[(u64, u64)]) -> bool {
    b.iter()
        .all(|&(lo, hi)| a.iter().any(|&(alo, ahi)| alo <= lo && hi <= ahi))
}

/// A rule's command condition, expanded for the shadowing check.
#[derive(Default)]
pub(super) struct CmdSet {
    /// No condition, or `@all`.
    pub(super) all: bool,
    pub(super) names: HashSet<String>,
    /// Dangerous commands named explicitly (by name or `@dangerous`).
    pub(super) explicit_dangerous: HashSet<String>,
    /// Dangerous commands matched at all (named, or in a group, or `all`).
    pub(super) dangerous: HashSet<String>,
}

pub(super) fn cmd_set(cmds: &Option<Vec<Spanned<CmdItem>>>) -> CmdSet {
    let mut set = cmd_set_names(cmds);
    set.dangerous = if set.all {
        Group::Dangerous.commands().map(String::from).collect()
    } else {
        set.names
            .iter()
            .filter(|n| commands::is_dangerous(n.as_bytes()))
            .cloned()
            .collect()
    };
    set
}

fn cmd_set_names(cmds: &Option<Vec<Spanned<CmdItem>>>) -> CmdSet {
    let Some(items) = cmds else {
        return CmdSet {
            all: true,
            ..CmdSet::default()
        };
    };
    let mut set = CmdSet::default();
    for it in items {
        match &it.node {
            CmdItem::Name(n) => {
                if commands::is_dangerous(n.as_bytes()) {
                    set.explicit_dangerous.insert(n.clone());
                }
                set.names.insert(n.clone());
            }
            CmdItem::Group(g) => match Group::from_name(g) {
                Some(Group::All) => set.all = true,
                Some(group) => {
                    set.names.extend(group.commands().map(String::from));
                    if group == Group::Dangerous {
                        set.explicit_dangerous
                            .extend(group.commands().map(String::from));
                    }
                }
                None => {}
            },
        }
    }
    set
}

/// A rule reduced to what the shadowing check compares.
pub(super) struct Shape {
    pub(super) fi: usize,
    pub(super) name: String,
    pub(super) span: Span,
    pub(super) drop: bool,
    pub(super) kind: ShapeKind,
}

pub(super) enum ShapeKind {
    Redis {
        ports: Option<Vec<(u64, u64)>>,
        dbs: Option<Vec<(u64, u64)>>,
        cmds: CmdSet,
        keys: Option<Vec<(PatternSrc, Analyzed)>>,
    },
    Mongo {
        dbs: Option<Vec<(PatternSrc, Analyzed)>>,
        colls: Option<Vec<(PatternSrc, Analyzed)>>,
        ops: u8,
    },
}

fn pats_cover(
    a: &Option<Vec<(PatternSrc, Analyzed)>>,
    b: &Option<Vec<(PatternSrc, Analyzed)>>,
) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => b
            .iter()
            .all(|(bs, ba)| a.iter().any(|(as_, aa)| covers(as_, aa, bs, ba))),
    }
}

fn opt_ranges_cover(a: &Option<Vec<(u64, u64)>>, b: &Option<Vec<(u64, u64)>>, full: u64) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(a), None) => ranges_cover(a, &[(0, full)]),
        (Some(a), Some(b)) => ranges_cover(a, b),
    }
}

/// True if rule `a`, placed before `b`, takes every operation `b` would.
pub(super) fn shadows(a: &Shape, b: &Shape) -> bool {
    match (&a.kind, &b.kind) {
        (
            ShapeKind::Redis {
                ports: ap,
                dbs: ad,
                cmds: ac,
                keys: ak,
            },
            ShapeKind::Redis {
                ports: bp,
                dbs: bd,
                cmds: bc,
                keys: bk,
            },
        ) => {
            // Cheapest comparisons first.
            opt_ranges_cover(ap, bp, u64::from(u16::MAX))
                && opt_ranges_cover(ad, bd, u64::from(u32::MAX))
                && pats_cover(ak, bk)
                && (ac.all || (!bc.all && bc.names.is_subset(&ac.names)))
                // A routing rule passes over dangerous commands it does not
                // name: a later rule that names them, or drops them, still
                // gets them.
                && (a.drop
                    || if b.drop {
                        bc.dangerous.is_subset(&ac.explicit_dangerous)
                    } else {
                        bc.explicit_dangerous.is_subset(&ac.explicit_dangerous)
                    })
        }
        (
            ShapeKind::Mongo {
                dbs: ad,
                colls: ac,
                ops: ao,
            },
            ShapeKind::Mongo {
                dbs: bd,
                colls: bc,
                ops: bo,
            },
        ) => bo & !ao == 0 && pats_cover(ad, bd) && pats_cover(ac, bc),
        _ => false,
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_ranges() {
        let r = |lo, hi| NumRange { lo, hi };
        assert_eq!(merge(&[r(5, 9), r(1, 3), r(4, 4)]), vec![(1, 9)]);
        assert!(ranges_cover(&[(1, 9)], &[(2, 3), (9, 9)]));
        assert!(!ranges_cover(&[(1, 9)], &[(2, 10)]));
    }
}
