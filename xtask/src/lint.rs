//! `cargo xtask lint`: the import rules of docs/ARCHITECTURE.md, checked on the source.
//!
//! Every file of `netctl/src` belongs to a layer (its top folder); a file may import its own
//! layer and the layers the table below allows, nothing above. And no two files import each
//! other, directly or round a circle (netctl-ebpf included). Imports are read from the text:
//! `use crate::…`, `use super::…`, `use child::…` after `mod child;`, and paths written out in
//! the code (`crate::a::b::f()`). Comments and inline modules (tests) are left out: a test
//! module's `super` is its own file.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use anyhow::{bail, Context, Result};

/// Which layers each layer may import (besides itself). Bottom first.
pub const LAYERS: [(&str, &[&str]); 10] = [
    ("model", &[]),
    ("base", &["model"]),
    ("store", &["model", "base"]),
    ("kernel", &["model", "base", "store"]),
    ("engine", &["model", "base", "store", "kernel"]),
    ("cluster", &["model", "base", "store", "kernel", "engine"]),
    ("cli", FRONT_END),
    ("cni", FRONT_END),
    ("docker", FRONT_END),
    ("daemon", FRONT_END),
];

/// What a front-end may import: everything below the front-ends, no other front-end.
const FRONT_END: &[&str] = &["model", "base", "store", "kernel", "engine", "cluster"];

pub fn run(root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    let netctl = Graph::read(&root.join("netctl/src"))?;
    problems.extend(netctl.layer_violations());
    problems.extend(netctl.circles("netctl/src"));
    let ebpf = Graph::read(&root.join("netctl-ebpf/src"))?;
    problems.extend(ebpf.circles("netctl-ebpf/src"));
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("lint: {p}");
        }
        bail!(
            "{} import problem(s): see the table in docs/ARCHITECTURE.md",
            problems.len()
        );
    }
    eprintln!(
        "lint: imports follow the layers ({} files in netctl, {} in netctl-ebpf), no circles",
        netctl.files.len(),
        ebpf.files.len()
    );
    Ok(())
}

/// Files by module path, and which file imports which (with one example path each).
struct Graph {
    /// Module path (`["kernel", "dataplane"]`) → file, relative to the source root.
    files: BTreeMap<Vec<String>, String>,
    edges: BTreeMap<String, BTreeMap<String, String>>,
}

impl Graph {
    fn read(src: &Path) -> Result<Self> {
        let mut texts = BTreeMap::new();
        walk(src, src, &mut texts)?;
        let files: BTreeMap<Vec<String>, String> = texts
            .keys()
            .map(|rel: &String| (module_path(rel), rel.clone()))
            .collect();
        let mut g = Graph {
            files,
            edges: BTreeMap::new(),
        };
        for (rel, text) in &texts {
            let me = module_path(rel);
            for (base, segs) in references(&strip(text)) {
                let full: Vec<String> = match base.as_str() {
                    "crate" => segs,
                    "super" => me[..me.len().saturating_sub(1)]
                        .iter()
                        .cloned()
                        .chain(segs)
                        .collect(),
                    _ => me.iter().cloned().chain(segs).collect(),
                };
                if let Some(target) = g.resolve(&full) {
                    if &target != rel {
                        g.edges
                            .entry(rel.clone())
                            .or_default()
                            .entry(target)
                            .or_insert_with(|| format!("{base}::{}", full.join("::")));
                    }
                }
            }
        }
        Ok(g)
    }

    /// The file of the longest module prefix of `path`.
    fn resolve(&self, path: &[String]) -> Option<String> {
        (1..=path.len())
            .rev()
            .find_map(|n| self.files.get(&path[..n]).cloned())
    }

    fn layer_violations(&self) -> Vec<String> {
        let allowed: BTreeMap<&str, &[&str]> = LAYERS.into_iter().collect();
        let mut out = Vec::new();
        for (from, targets) in &self.edges {
            let lf = layer(from);
            let Some(ok) = allowed.get(lf) else {
                if !matches!(lf, "lib" | "main") {
                    out.push(format!("{from}: in no layer (put it in a layer's folder)"));
                }
                continue;
            };
            for (to, example) in targets {
                let lt = layer(to);
                if lt != lf && !ok.contains(&lt) {
                    out.push(format!(
                        "{from} imports {to} ({example}): {lf} may not import {lt}"
                    ));
                }
            }
        }
        out
    }

    /// Strongly connected groups of more than one file (Tarjan).
    fn circles(&self, root: &str) -> Vec<String> {
        let nodes: Vec<&String> = self.files.values().collect();
        let index_of: BTreeMap<&String, usize> =
            nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let succ: Vec<Vec<usize>> = nodes
            .iter()
            .map(|n| {
                self.edges
                    .get(*n)
                    .map(|t| t.keys().filter_map(|k| index_of.get(k).copied()).collect())
                    .unwrap_or_default()
            })
            .collect();
        let mut t = Tarjan {
            succ: &succ,
            index: vec![None; nodes.len()],
            low: vec![0; nodes.len()],
            on: vec![false; nodes.len()],
            stack: Vec::new(),
            next: 0,
            groups: Vec::new(),
        };
        for v in 0..nodes.len() {
            if t.index[v].is_none() {
                t.visit(v);
            }
        }
        t.groups
            .into_iter()
            .map(|g| {
                let names: BTreeSet<&str> = g.iter().map(|i| nodes[*i].as_str()).collect();
                format!(
                    "{root}: import circle ({} files): {}",
                    names.len(),
                    self.shortest_circle(&names).join(" → ")
                )
            })
            .collect()
    }

    /// One shortest way round a circle among `group`, each step with the path that makes
    /// it, back to where it started.
    fn shortest_circle(&self, group: &BTreeSet<&str>) -> Vec<String> {
        let Some(start) = group.iter().next().copied() else {
            return Vec::new();
        };
        let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        while let Some(a) = queue.pop_front() {
            for b in self.edges.get(a).into_iter().flat_map(|e| e.keys()) {
                let b = b.as_str();
                if !group.contains(b) || came_from.contains_key(b) {
                    continue;
                }
                came_from.insert(b, a);
                if b == start {
                    queue.clear();
                    break;
                }
                queue.push_back(b);
            }
        }
        let mut steps = vec![start.to_string()];
        let mut at = start;
        while let Some(prev) = came_from.get(at).copied() {
            let why = &self.edges[prev][at];
            steps.push(format!("{prev} ({why})"));
            at = prev;
            if at == start {
                break;
            }
        }
        steps.reverse();
        steps
    }
}

struct Tarjan<'a> {
    succ: &'a [Vec<usize>],
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on: Vec<bool>,
    stack: Vec<usize>,
    next: usize,
    groups: Vec<Vec<usize>>,
}

impl Tarjan<'_> {
    fn visit(&mut self, v: usize) {
        self.index[v] = Some(self.next);
        self.low[v] = self.next;
        self.next += 1;
        self.stack.push(v);
        self.on[v] = true;
        for &w in &self.succ[v] {
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(iw) if self.on[w] => self.low[v] = self.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let mut group = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on[w] = false;
                group.push(w);
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                self.groups.push(group);
            }
        }
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            walk(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
            out.insert(rel, fs::read_to_string(&path)?);
        }
    }
    Ok(())
}

/// `kernel/dataplane/mod.rs` → `["kernel", "dataplane"]`; `lib.rs` → `[]`.
fn module_path(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// A file's layer: its top folder (or its own name at the top).
fn layer(rel: &str) -> &str {
    rel.split('/').next().unwrap_or(rel).trim_end_matches(".rs")
}

/// The text without comments, string literals' contents and inline `mod x { … }` blocks.
fn strip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'r'
            && matches!(b.get(i + 1), Some(b'"' | b'#'))
            && (i == 0 || !is_ident(b[i - 1] as char))
        {
            // A raw string: r"…", r#"…"#, closed by the quote and as many #.
            let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let body = i + 2 + hashes;
            i = text[body..]
                .find(&close)
                .map_or(b.len(), |k| body + k + close.len());
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            // A char literal with an escape ('\'', '\\', '\u{…}'): the escaped char, then
            // up to the closing quote.
            i += 3;
            while i < b.len() && b[i] != b'\'' {
                i += 1;
            }
            i += 1;
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            i += 3; // a char literal ('{'); lifetimes ('a) have no closing quote there
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    remove_inline_modules(&out)
}

fn remove_inline_modules(text: &str) -> String {
    let mut s = text.to_string();
    loop {
        let Some(start) = find_inline_module(&s) else {
            return s;
        };
        let open = start + s[start..].find('{').expect("found with a brace");
        let mut depth = 0;
        let mut end = s.len();
        for (k, c) in s[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        s.replace_range(start..end, "");
    }
}

/// Where `mod NAME {` starts.
fn find_inline_module(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(k) = s[from..].find("mod ") {
        let at = from + k;
        let before_ok = at == 0 || !is_ident(s.as_bytes()[at - 1] as char);
        let rest = &s[at + 4..];
        let name_len = rest.chars().take_while(|c| is_ident(*c)).count();
        let after = rest[name_len..].trim_start();
        if before_ok && name_len > 0 && after.starts_with('{') {
            return Some(at);
        }
        from = at + 4;
    }
    None
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path this text names from `crate`, `super` or a child module: (base, segments).
fn references(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for base in ["crate", "super"] {
        for segs in paths_after(text, base) {
            out.push((base.to_string(), segs));
        }
    }
    for child in child_modules(text) {
        for segs in paths_after(text, &child) {
            let path = std::iter::once(child.clone()).chain(segs).collect();
            out.push(("self".to_string(), path));
        }
    }
    out
}

/// The paths written after `head::` wherever `head` starts a path (not the tail of another).
fn paths_after(text: &str, head: &str) -> Vec<Vec<String>> {
    let pat = format!("{head}::");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(k) = text[from..].find(&pat) {
        let at = from + k;
        from = at + pat.len();
        let prev = text[..at].chars().next_back();
        if prev.is_some_and(|c| is_ident(c) || c == ':') {
            continue;
        }
        out.extend(expand(&text[from..]));
    }
    out
}

/// Names declared with `mod NAME;` (child files).
fn child_modules(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("pub(crate) ")
                .or_else(|| l.strip_prefix("pub "))
                .unwrap_or(l);
            let name = l.strip_prefix("mod ")?.strip_suffix(';')?.trim();
            name.chars().all(is_ident).then(|| name.to_string())
        })
        .collect()
}

/// The paths at the start of `s` (what follows `crate::`): `a::b::c`, or a `{…}` group of
/// them, nested.
fn expand(s: &str) -> Vec<Vec<String>> {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('{') {
        let Some(inner) = group(rest) else {
            return Vec::new();
        };
        return split_top(inner).iter().flat_map(|i| expand(i)).collect();
    }
    let mut segs = Vec::new();
    let mut rest = s;
    loop {
        let n = rest.chars().take_while(|c| is_ident(*c)).count();
        if n == 0 {
            break;
        }
        segs.push(rest[..n].to_string());
        rest = &rest[n..];
        let Some(r) = rest.strip_prefix("::") else {
            break;
        };
        rest = r;
        if let Some(g) = rest.strip_prefix('{') {
            let Some(inner) = group(g) else {
                break;
            };
            return split_top(inner)
                .iter()
                .flat_map(|i| expand(i))
                .map(|tail| segs.iter().cloned().chain(tail).collect())
                .chain(std::iter::once(segs.clone()))
                .collect();
        }
    }
    if segs.is_empty() {
        Vec::new()
    } else {
        vec![segs]
    }
}

/// The text up to the brace that closes a group opened just before `s`.
fn group(s: &str) -> Option<&str> {
    let mut depth = 1;
    for (k, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&s[..k]);
                }
            }
            _ => {}
        }
    }
    None
}

fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (k, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().filter(|i| !i.trim().is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_grouped_nested_and_written_out_paths() {
        let text = "use crate::{a::{b, c::D}, e};\nfn f() { crate::g::h(); super::i::j(); }\n";
        let mut got: Vec<String> = references(&strip(text))
            .into_iter()
            .map(|(b, s)| format!("{b}:{}", s.join("::")))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                "crate:a",
                "crate:a::b",
                "crate:a::c::D",
                "crate:e",
                "crate:g::h",
                "super:i::j"
            ]
        );
    }

    #[test]
    fn comments_strings_and_test_modules_are_not_imports() {
        let text = "// crate::a\n/// [`crate::b`]\nconst S: &str = \"crate::c\";\nconst R: &str = r#\"{\"crate::x\"#;\nconst C: char = '{';\nconst Q: char = '\\'';\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use crate::d;\n}\nuse crate::e;\n";
        let got: Vec<Vec<String>> = references(&strip(text)).into_iter().map(|r| r.1).collect();
        assert_eq!(got, [vec!["e".to_string()]]);
    }

    #[test]
    fn finds_layer_violations_and_circles() {
        let mut g = Graph {
            files: [
                (vec!["model".into(), "a".into()], "model/a.rs".into()),
                (vec!["kernel".into(), "b".into()], "kernel/b.rs".into()),
                (vec!["kernel".into(), "c".into()], "kernel/c.rs".into()),
            ]
            .into_iter()
            .collect(),
            edges: BTreeMap::new(),
        };
        let mut edge = |a: &str, b: &str| {
            g.edges
                .entry(a.into())
                .or_default()
                .insert(b.into(), "x".into());
        };
        edge("model/a.rs", "kernel/b.rs");
        edge("kernel/b.rs", "kernel/c.rs");
        edge("kernel/c.rs", "kernel/b.rs");
        let v = g.layer_violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("model may not import kernel"), "{v:?}");
        let c = g.circles("src");
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(
            c[0].contains("kernel/b.rs (x) → kernel/c.rs (x) → kernel/b.rs"),
            "{c:?}"
        );
    }
}
