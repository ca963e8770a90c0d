//! The machinery behind `tests/architecture.rs`: a small hand-written lexer for rustfmt-formatted
//! Rust (and for plain JavaScript), the file-level import graph of a crate with its circles, the
//! layer rule, lines of code and function lengths. No parser crate: masking comments and literal
//! contents, then looking at tokens, is enough for source that rustfmt has formatted.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

mod lex;

use lex::{is_ident, item_end, parse_use_tree, public_before, test_lines, tokenize, Tok};
pub use lex::{js_code_lines, mask_js, mask_rust};

/// A function: its name, the line of its `fn` and its length in lines, `fn` line to closing
/// brace inclusive (closures and nested functions inside count toward it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FnSpan {
    /// The function's name.
    pub name: String,
    /// 1-based line of the `fn` keyword.
    pub line: usize,
    /// Lines from the `fn` line to the closing brace, both included.
    pub lines: usize,
}

/// One Rust source file, lexed, with its test-only code set aside.
pub struct SourceFile {
    /// Path relative to the crate's source folder, `/`-separated (`hub/mod.rs`).
    pub rel: String,
    /// Module path (`hub/session.rs` → `["hub", "session"]`, the crate root → `[]`); `None` for
    /// a file that is the root of another crate (`bin/*.rs`, `main.rs` beside a `lib.rs`).
    pub module: Option<Vec<String>>,
    masked: Vec<String>,
    test: BTreeSet<usize>,
    /// Tokens of the code outside test-only lines.
    toks: Vec<Tok>,
}

impl SourceFile {
    /// Lexes `src`, found at `rel` in a crate's source folder.
    pub fn parse(rel: &str, src: &str, module: Option<Vec<String>>) -> SourceFile {
        let masked = mask_rust(src);
        let all = tokenize(&masked);
        let test = test_lines(&all, masked.len());
        let toks = all
            .into_iter()
            .filter(|t| !test.contains(&t.line))
            .collect();
        SourceFile {
            rel: rel.to_owned(),
            module,
            masked,
            test,
            toks,
        }
    }

    /// Lines that are neither blank, nor comments, nor test-only code.
    pub fn code_lines(&self) -> usize {
        let code =
            |(n, l): &(usize, &String)| !self.test.contains(&(n + 1)) && !l.trim().is_empty();
        self.masked.iter().enumerate().filter(code).count()
    }

    /// Every `fn` with a body outside test-only code (methods and nested functions included).
    pub fn functions(&self) -> Vec<FnSpan> {
        let t = &self.toks;
        let mut fns = Vec::new();
        for i in 0..t.len() {
            let named = t.get(i + 1).is_some_and(|n| n.text.starts_with(is_ident));
            if t[i].text != "fn" || !named {
                continue;
            }
            // The body is the first `{` outside brackets; a `;` first means no body.
            let mut depth = 0i32;
            let body = t[i + 2..].iter().position(|tok| {
                match tok.text.as_str() {
                    "(" | "[" => depth += 1,
                    ")" | "]" => depth -= 1,
                    "{" | ";" if depth == 0 => return true,
                    _ => {}
                }
                false
            });
            let Some(open) = body.map(|k| i + 2 + k).filter(|&k| t[k].text == "{") else {
                continue;
            };
            let close = item_end(t, open);
            let (name, line) = (t[i + 1].text.clone(), t[i].line);
            fns.push(FnSpan {
                name,
                line,
                lines: t[close].line - line + 1,
            });
        }
        fns
    }

    fn is_facade(&self) -> bool {
        let name = self.rel.rsplit('/').next().unwrap_or_default();
        matches!(name, "mod.rs" | "lib.rs" | "main.rs")
    }
}

/// One file referring to another: every reference, as `(line, path as written)`.
#[derive(Debug, Clone)]
pub struct Edge {
    /// Index of the referring file in [`Crate::files`].
    pub from: usize,
    /// Index of the file referred to.
    pub to: usize,
    /// Where and how: 1-based line and the path (`crate::store::Role`).
    pub refs: Vec<(usize, String)>,
}
/// The source files of one crate and the modules they define.
pub struct Crate {
    /// The source folder, relative to the workspace root (`server/src`).
    pub dir: String,
    /// Its `.rs` files, sorted by path.
    pub files: Vec<SourceFile>,
    /// The library's name in paths (`parley_server`), when it has a `lib.rs`: binary roots
    /// beside it (`main.rs`, `bin/*.rs`) reach its modules through that name.
    pub lib_name: Option<String>,
}

impl Crate {
    /// Reads every `.rs` file under `root/dir`.
    pub fn load(root: &Path, dir: &str) -> Crate {
        let base = root.join(dir);
        assert!(base.is_dir(), "{} is not a folder", base.display());
        let sources: Vec<(String, String)> = rust_files(&base)
            .into_iter()
            .map(|p| {
                let rel = p
                    .strip_prefix(&base)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                let text =
                    fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                (rel, text)
            })
            .collect();
        let borrowed: Vec<(&str, &str)> = sources.iter().map(|(r, s)| (&**r, &**s)).collect();
        let krate = Crate::from_sources(dir, &borrowed);
        match package_name(&base.join("../Cargo.toml")) {
            Some(name) if krate.lib_name.is_some() => krate.with_lib_name(&name),
            _ => krate,
        }
    }

    /// Names the library (`parley-server` is `parley_server` in paths).
    pub fn with_lib_name(mut self, package: &str) -> Crate {
        if self.lib_name.is_some() {
            self.lib_name = Some(package.replace('-', "_"));
        }
        self
    }

    /// A crate made of `(path relative to dir, source)` pairs (the unit tests' snippets).
    pub fn from_sources(dir: &str, files: &[(&str, &str)]) -> Crate {
        let has_lib = files.iter().any(|(rel, _)| *rel == "lib.rs");
        let module = |rel: &str| -> Option<Vec<String>> {
            match rel {
                "lib.rs" => Some(vec![]),
                "main.rs" => (!has_lib).then(Vec::new),
                _ if rel.starts_with("bin/") => None,
                _ => {
                    let mut segs: Vec<String> = rel
                        .trim_end_matches(".rs")
                        .split('/')
                        .map(str::to_owned)
                        .collect();
                    if segs.last().is_some_and(|s| s == "mod") {
                        segs.pop();
                    }
                    Some(segs)
                }
            }
        };
        let mut files: Vec<SourceFile> = files
            .iter()
            .map(|(rel, src)| SourceFile::parse(rel, src, module(rel)))
            .collect();
        files.sort_by(|a, b| a.rel.cmp(&b.rel));
        Crate {
            dir: dir.to_owned(),
            files,
            // Named by `load` (or `with_lib_name`); until then no path reaches it by name.
            lib_name: has_lib.then(String::new),
        }
    }

    /// `dir/rel` of file `i`, for messages.
    pub fn name(&self, i: usize) -> String {
        format!("{}/{}", self.dir, self.files[i].rel)
    }

    /// Every file-to-file reference: `use crate::…`/`super::…`/`self::…`/`child_module::…`
    /// and the same paths inline in code, resolved to the file of the longest module prefix;
    /// from a binary root beside a `lib.rs`, `lib_name::…` paths into the library.
    /// Not counted: test-only code, comments, `mod x;`, and `pub use` re-export lines of a
    /// `mod.rs`/`lib.rs`/`main.rs` facade — unless the facade's own code uses a name it
    /// re-exports (then it does depend on that file).
    pub fn edges(&self) -> Vec<Edge> {
        let modules: BTreeMap<&[String], usize> = (self.files.iter().enumerate())
            .filter_map(|(i, f)| Some((f.module.as_deref()?, i)))
            .collect();
        let mut edges = Vec::new();
        let lib_name = self.lib_name.as_deref().filter(|n| !n.is_empty());
        for (file, f) in self.files.iter().enumerate() {
            // A binary root is the root of its own crate, which reaches the library by name.
            let (module, lib) = match (&f.module, lib_name) {
                (Some(module), _) => (module.as_slice(), None),
                (None, Some(lib)) => (&[][..], Some(lib)),
                (None, None) => continue,
            };
            let t = &f.toks;
            let children = (1..t.len())
                .filter(|&k| {
                    t[k - 1].text == "mod"
                        && t.get(k + 1).is_some_and(|n| n.text == ";" || n.text == "{")
                })
                .map(|k| t[k].text.as_str())
                .collect();
            let r = Resolver {
                modules: &modules,
                file,
                module,
                children,
                lib,
            };
            let mut refs = Refs::new();
            let (in_use, reexported) = use_refs(f, &r, &mut refs);
            inline_refs(t, &r, &in_use, &reexported, &mut refs);
            edges.extend(refs.into_iter().map(|(to, refs)| Edge {
                from: file,
                to,
                refs,
            }));
        }
        edges
    }

    /// `a.rs -> b.rs  (a.rs:12 crate::b::X, a.rs:40 crate::b::y)`.
    pub fn describe(&self, e: &Edge) -> String {
        const SHOWN: usize = 6;
        let from = &self.files[e.from].rel;
        let mut at: Vec<String> = (e.refs.iter().take(SHOWN))
            .map(|(line, path)| format!("{from}:{line} {path}"))
            .collect();
        if e.refs.len() > SHOWN {
            at.push(format!("+{} more", e.refs.len() - SHOWN));
        }
        format!(
            "{} -> {}  ({})",
            self.name(e.from),
            self.name(e.to),
            at.join(", ")
        )
    }
}

/// Turns a path written in one file into the file defining its longest module prefix.
struct Resolver<'a> {
    modules: &'a BTreeMap<&'a [String], usize>,
    file: usize,
    module: &'a [String],
    /// The modules the file declares (`mod x;`): there `x::…` means `self::x::…`.
    children: BTreeSet<&'a str>,
    /// In a binary root beside the library: the library's name. Its own `crate::…` paths
    /// then stay inside the binary, and `lib::…` paths go into the library.
    lib: Option<&'a str>,
}

impl Resolver<'_> {
    /// The file that `segs` (`crate::hub::Foo`, `super::x`, `child::y`) lives in, if it is
    /// a path into this crate and another file.
    fn resolve(&self, segs: &[String]) -> Option<usize> {
        let segs = without_self(segs);
        let module = self.module;
        if let Some(lib) = self.lib {
            let full = match segs.split_first() {
                Some((first, rest)) if first == lib => rest,
                _ => return None,
            };
            return (0..=full.len())
                .rev()
                .find_map(|n| self.modules.get(&full[..n]).copied());
        }
        let (mut full, rest) = match segs.first()?.as_str() {
            "crate" => (vec![], &segs[1..]),
            "self" => (module.to_vec(), &segs[1..]),
            "super" => {
                let ups = segs.iter().take_while(|s| *s == "super").count();
                (
                    module[..module.len().checked_sub(ups)?].to_vec(),
                    &segs[ups..],
                )
            }
            child if self.children.contains(child) => (module.to_vec(), segs),
            _ => return None,
        };
        full.extend_from_slice(rest);
        let to = (0..=full.len())
            .rev()
            .find_map(|n| self.modules.get(&full[..n]).copied())?;
        (to != self.file).then_some(to)
    }
}

/// `a::b::{self}` is `a::b`.
fn without_self(segs: &[String]) -> &[String] {
    segs.strip_suffix(&["self".to_owned()]).unwrap_or(segs)
}

/// One file's references: `(line, path)` by the file referred to.
type Refs = BTreeMap<usize, Vec<(usize, String)>>;

/// Names a facade re-exports (`pub use x::Name`), with the file and path they come from.
type Reexported = BTreeMap<String, (usize, String)>;

/// The `use` statements of `f`, whose references go to `refs` (except a facade's re-exports,
/// returned by local name), and which tokens belong to them.
fn use_refs(f: &SourceFile, r: &Resolver, refs: &mut Refs) -> (Vec<bool>, Reexported) {
    let t = &f.toks;
    let mut reexported = Reexported::new();
    let mut in_use = vec![false; t.len()];
    let mut i = 0;
    while i < t.len() {
        if t[i].text != "use" {
            i += 1;
            continue;
        }
        let mut pos = i + 1;
        let mut paths = Vec::new();
        parse_use_tree(t, &mut pos, vec![], &mut paths);
        let end = (pos..t.len())
            .find(|&k| t[k].text == ";")
            .unwrap_or(t.len() - 1);
        in_use[i..=end].iter_mut().for_each(|u| *u = true);
        let facade = f.is_facade() && public_before(t, i);
        for p in paths {
            let Some(to) = r.resolve(&p.segs) else {
                continue;
            };
            let text = without_self(&p.segs).join("::");
            if !facade {
                refs.entry(to).or_default().push((t[i].line, text));
            } else if !p.glob {
                let last = without_self(&p.segs).last().cloned();
                reexported.insert(p.alias.or(last).unwrap_or_default(), (to, text));
            }
        }
        i = end + 1;
    }
    (in_use, reexported)
}

/// Paths in code outside `use` statements (`crate::x::f()`), and names a facade re-exports
/// used in its own code.
fn inline_refs(t: &[Tok], r: &Resolver, in_use: &[bool], reexported: &Reexported, refs: &mut Refs) {
    for k in 0..t.len() {
        let prev = if k > 0 { t[k - 1].text.as_str() } else { "" };
        if in_use[k] || prev == "::" || prev == "." {
            continue;
        }
        let word = t[k].text.as_str();
        let pathy = matches!(word, "crate" | "self" | "super")
            || r.children.contains(word)
            || r.lib == Some(word);
        if pathy && t.get(k + 1).is_some_and(|n| n.text == "::") {
            let mut segs = vec![word.to_owned()];
            let mut j = k + 1;
            while t.get(j).is_some_and(|n| n.text == "::")
                && t.get(j + 1).is_some_and(|n| n.text.starts_with(is_ident))
            {
                segs.push(t[j + 1].text.clone());
                j += 2;
            }
            if let Some(to) = r.resolve(&segs).filter(|_| segs.len() > 1) {
                refs.entry(to)
                    .or_default()
                    .push((t[k].line, segs.join("::")));
            }
        } else if let Some((to, path)) = reexported.get(word) {
            let why = format!("{word} (re-exported by `pub use {path}`)");
            refs.entry(*to).or_default().push((t[k].line, why));
        }
    }
}

/// The strongly connected components of more than one file (each file in one reaches every
/// other: an import circle), files sorted within each, by Tarjan's algorithm.
pub fn circles(file_count: usize, edges: &[Edge]) -> Vec<Vec<usize>> {
    struct Tarjan<'a> {
        next: Vec<Vec<usize>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        counter: usize,
        out: &'a mut Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.counter);
            self.low[v] = self.counter;
            self.counter += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for w in self.next[v].clone() {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    scc.push(w);
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort_unstable();
                    self.out.push(scc);
                }
            }
        }
    }
    let mut next = vec![Vec::new(); file_count];
    for e in edges {
        next[e.from].push(e.to);
    }
    let mut out = Vec::new();
    let mut t = Tarjan {
        next,
        index: vec![None; file_count],
        low: vec![0; file_count],
        on_stack: vec![false; file_count],
        stack: Vec::new(),
        counter: 0,
        out: &mut out,
    };
    for v in 0..file_count {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    out.sort();
    out
}

/// The layer rule over `krate`'s edges: `layers` lists top-level modules highest first (the
/// crate root is `main`/`lib`); a file may refer to its own top-level module or to any on a
/// later layer; modules on one layer may refer to each other only as `(from, to)` in
/// `allowed`. Returns one message per top-level module missing from `layers`, then one per
/// offending edge.
pub fn layer_violations(
    krate: &Crate,
    edges: &[Edge],
    layers: &[&[&str]],
    allowed: &[(&str, &str)],
) -> Vec<String> {
    let top = |i: usize| -> String {
        match (
            krate.files[i].module.as_deref(),
            krate.files[i].rel.as_str(),
        ) {
            (Some([first, ..]), _) => first.clone(),
            (_, rel) => rel.trim_end_matches(".rs").to_owned(),
        }
    };
    let rank = |m: &str| layers.iter().position(|layer| layer.contains(&m));
    let mut unknown: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Binary roots count when they use the library (`main` beside `lib.rs`).
    let layered = |i: &usize| krate.files[*i].module.is_some() || krate.lib_name.is_some();
    for i in (0..krate.files.len()).filter(layered) {
        if rank(top(i).as_str()).is_none() {
            unknown.entry(top(i)).or_default().push(krate.name(i));
        }
    }
    let mut out: Vec<String> = (unknown.iter())
        .map(|(m, files)| {
            format!(
                "unknown top-level module `{m}` ({}): place it in LAYERS",
                files.join(", ")
            )
        })
        .collect();
    for e in edges {
        let (a, b) = (top(e.from), top(e.to));
        let (Some(ra), Some(rb)) = (rank(&a), rank(&b)) else {
            continue;
        };
        if a == b || rb > ra || (rb == ra && allowed.contains(&(a.as_str(), b.as_str()))) {
            continue;
        }
        let why = if rb < ra {
            "points up"
        } else {
            "same layer, not in SAME_LAYER_ALLOWED"
        };
        out.push(format!(
            "`{a}` (layer {ra}) -> `{b}` (layer {rb}), {why}: {}",
            krate.describe(e)
        ));
    }
    out
}

/// The `name` of the `[package]` in the `Cargo.toml` at `path`, if it can be read.
fn package_name(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if let Some(value) = line.strip_prefix("name").filter(|_| in_package) {
            let value = value.trim_start().strip_prefix('=')?.trim();
            return Some(value.trim_matches('"').to_owned());
        }
    }
    None
}

/// Files under `dir` whose name ends with `.{ext}`, recursively, sorted; folders named in
/// `skip` (paths relative to `dir`) are left out.
pub fn files_with_ext(dir: &Path, ext: &str, skip: &[&str]) -> Vec<PathBuf> {
    fn walk(base: &Path, dir: &Path, ext: &str, skip: &[&str], out: &mut Vec<PathBuf>) {
        let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("read_dir entry").path();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if path.is_dir() && !skip.contains(&rel.as_str()) {
                walk(base, &path, ext, skip, out);
            } else if path.extension().is_some_and(|e| e == ext) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, ext, skip, &mut out);
    out.sort();
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    files_with_ext(dir, "rs", &[])
}
