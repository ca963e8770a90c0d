//! The house rules, checked on the workspace's own source text (no build of the code under
//! test): no import circle between files, `server/src` layers pointing one way, small files,
//! short functions. Each rule is its own test, so each reports all its violations at once.
//! The lexer and graph code live in `parley_tests::arch`; its unit tests are at the bottom.
//!
//! Run: `cargo test -p parley-tests --test architecture`.

use parley_tests::arch::{circles, files_with_ext, js_code_lines, layer_violations, Crate};
use parley_tests::workspace_root;

/// The crates' source folders (relative to the workspace root) that the rules cover.
const CRATES: &[&str] = &["protocol/src", "stomp/src", "server/src", "bots/src"];

/// Test-support code: held to the no-circle rule, not to the size rules (it is test code).
const TEST_SUPPORT: &[&str] = &["tests/src"];

/// The layers of `server/src`, highest first, by top-level module (`hub` is `hub.rs` or
/// `hub/`, and everything under it). `main` is the binary's `main.rs`, which reaches the library
/// as `parley_server::…`; `lib` is the library's root `lib.rs` (module declarations and the few
/// re-exports `main` uses); `fuzzing` and `benching` are the fuzz targets' and the benchmarks'
/// ways in, beside `main` so none uses another. A file may refer to its own top-level module and to modules on LATER lines only.
/// Modules sharing a line are peers: they must not refer to each other, except as listed in
/// [`SAME_LAYER_ALLOWED`]. A top-level module missing from this table fails the test: give it a
/// place here.
const LAYERS: &[&[&str]] = &[
    &["main", "fuzzing", "benching"],
    &["lib"],
    &["app"],
    &["config"],
    &["http"],
    &["endpoints"],
    &["ws"],
    &["hub"],
    &["health"],
    &["acl", "auth", "journal", "bus"],
    &["store"],
    &["park"],
    &["clock", "metrics", "logs"],
];

/// References allowed between peers of one layer, as `(from, to)`: one direction each.
const SAME_LAYER_ALLOWED: &[(&str, &str)] = &[];

/// Most lines of code (non-blank, not comments, not test-only code) in one source file.
const MAX_FILE_LINES: usize = 600;

/// Most lines of one function, from its `fn` line to its closing brace.
const MAX_FN_LINES: usize = 100;

/// The web client's folder, and the folder inside it that holds third-party code.
const WEB_CLIENT: &str = "web-client";
const WEB_VENDOR: &str = "vendor";

fn crates() -> Vec<Crate> {
    let root = workspace_root();
    CRATES.iter().map(|dir| Crate::load(&root, dir)).collect()
}

fn assert_none(rule: &str, found: &[String]) {
    assert!(
        found.is_empty(),
        "{rule}: {} violation(s)\n  {}\n",
        found.len(),
        found.join("\n  ")
    );
}

/// Every file-level import circle, with the references that close it.
fn circle_reports(krate: &Crate) -> Vec<String> {
    let edges = krate.edges();
    let mut out = Vec::new();
    for scc in circles(krate.files.len(), &edges) {
        let names: Vec<String> = scc.iter().map(|&i| krate.files[i].rel.clone()).collect();
        let inside = (edges.iter())
            .filter(|e| scc.contains(&e.from) && scc.contains(&e.to))
            .map(|e| format!("\n      {}", krate.describe(e)));
        out.push(format!(
            "circle of {} files in {}: {}; references inside it:{}",
            scc.len(),
            krate.dir,
            names.join(", "),
            inside.collect::<String>()
        ));
    }
    out
}

#[test]
fn no_import_circles() {
    let root = workspace_root();
    let support = TEST_SUPPORT.iter().map(|dir| Crate::load(&root, dir));
    let found: Vec<String> = crates()
        .into_iter()
        .chain(support)
        .flat_map(|c| circle_reports(&c))
        .collect();
    assert_none(
        "import circles between files (crate::/super::/self:: paths)",
        &found,
    );
}

#[test]
fn server_layers_point_one_way() {
    let server = Crate::load(&workspace_root(), "server/src");
    let found = layer_violations(&server, &server.edges(), LAYERS, SAME_LAYER_ALLOWED);
    assert_none(
        "server/src layers (see LAYERS in tests/tests/architecture.rs)",
        &found,
    );
}

#[test]
fn files_are_small() {
    let mut found = Vec::new();
    for krate in crates() {
        for (i, f) in krate.files.iter().enumerate() {
            let n = f.code_lines();
            if n > MAX_FILE_LINES {
                found.push(format!("{}: {n} lines of code", krate.name(i)));
            }
        }
    }
    let root = workspace_root();
    let web = root.join(WEB_CLIENT);
    for path in files_with_ext(&web, "js", &[WEB_VENDOR]) {
        let text = std::fs::read_to_string(&path).unwrap();
        let n = js_code_lines(&text);
        if n > MAX_FILE_LINES {
            let name = path.strip_prefix(&root).unwrap().display();
            found.push(format!("{name}: {n} lines of code"));
        }
    }
    let rule = format!("files over {MAX_FILE_LINES} lines of code (tests excluded)");
    assert_none(&rule, &found);
}

#[test]
fn functions_are_short() {
    let mut found = Vec::new();
    for krate in crates() {
        for (i, f) in krate.files.iter().enumerate() {
            for span in f.functions().into_iter().filter(|s| s.lines > MAX_FN_LINES) {
                let (name, line, n) = (krate.name(i), span.line, span.lines);
                found.push(format!("{name}:{line} fn {}: {n} lines", span.name));
            }
        }
    }
    let rule = format!("functions over {MAX_FN_LINES} lines (tests excluded)");
    assert_none(&rule, &found);
}

/// The lexer, the graph and the rules on small inline snippets.
mod parser {
    use parley_tests::arch::{circles, js_code_lines, layer_violations, mask_rust, Crate};

    /// `(from, to)` file names of every edge.
    fn edges(files: &[(&str, &str)]) -> Vec<(String, String)> {
        let krate = Crate::from_sources("src", files);
        let name = |i: usize| krate.files[i].rel.clone();
        krate
            .edges()
            .iter()
            .map(|e| (name(e.from), name(e.to)))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn circle_names(files: &[(&str, &str)]) -> Vec<Vec<String>> {
        let krate = Crate::from_sources("src", files);
        let scc = circles(krate.files.len(), &krate.edges());
        let names = |c: &Vec<usize>| c.iter().map(|&i| krate.files[i].rel.clone()).collect();
        scc.iter().map(names).collect()
    }

    /// A function of exactly `n` lines (`fn` line and closing brace included), with a closure.
    fn fn_of(n: usize) -> String {
        let body = "        let _x = 1;\n".repeat(n - 4);
        format!("fn long() {{\n    let f = || {{\n{body}    }};\n}}\n")
    }

    #[test]
    fn finds_a_two_file_circle_through_use_and_inline_paths() {
        let files = [
            ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
            ("a.rs", "use crate::b::B;\npub struct A;\n"),
            (
                "b.rs",
                "pub struct B;\npub fn f() {\n    let _ = crate::a::A;\n}\n",
            ),
            ("c.rs", "use crate::a::A;\n"),
        ];
        assert_eq!(circle_names(&files), vec![vec!["a.rs", "b.rs"]]);
    }

    #[test]
    fn finds_a_longer_circle_through_super_and_child_modules() {
        let files = [
            ("main.rs", "mod hub;\nmod store;\n"),
            ("hub/mod.rs", "mod session;\nuse session::Session;\n"),
            ("hub/session.rs", "use crate::store::Store;\n"),
            (
                "store.rs",
                "fn f() -> super::hub::Thing {\n    todo!()\n}\n",
            ),
        ];
        let want = vec![vec!["hub/mod.rs", "hub/session.rs", "store.rs"]];
        assert_eq!(circle_names(&files), want);
    }

    #[test]
    fn ignores_comments_strings_tests_and_mod_declarations() {
        let b = r##"//! Uses [`crate::a`] a lot.
mod inner;
/// See crate::a::A.
/* crate::a::A */
pub fn f() -> &'static str {
    let _c = '{';
    let _r = r#"crate::a::A "# ;
    "crate::a::A // not a comment"
}

#[cfg(test)]
mod tests {
    use crate::a::A;
    use super::*;
}
"##;
        let files = [
            ("lib.rs", "mod a;\nmod b;\n"),
            ("a.rs", "use crate::b::f;\n"),
            ("b.rs", b),
        ];
        assert_eq!(edges(&files), pairs(&[("a.rs", "b.rs")]));
    }

    #[test]
    fn code_after_a_test_item_still_counts() {
        let b = "#[cfg(test)]\nfn helper() {\n    crate::a::x();\n}\n\nfn real() {\n    crate::a::y();\n}\n";
        let files = [("lib.rs", "mod a;\nmod b;\n"), ("a.rs", ""), ("b.rs", b)];
        let krate = Crate::from_sources("src", &files);
        let e = krate.edges();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].refs, vec![(7, "crate::a::y".to_string())]);
        assert_eq!(krate.files[1].rel, "b.rs");
        assert_eq!(krate.files[1].code_lines(), 3);
    }

    #[test]
    fn pub_use_in_a_facade_is_no_dependency_unless_the_facade_uses_the_name() {
        let facade = [
            ("lib.rs", "mod hub;\npub use hub::Hub;\n"),
            ("hub/mod.rs", "mod session;\npub use session::Session;\npub(crate) use self::session::Other as O;\npub struct Hub;\n"),
            ("hub/session.rs", "use super::Hub;\npub struct Session;\npub struct Other;\n"),
        ];
        assert_eq!(edges(&facade), pairs(&[("hub/session.rs", "hub/mod.rs")]));
        assert!(circle_names(&facade).is_empty());

        let uses_it = [
            ("lib.rs", "mod hub;\n"),
            (
                "hub/mod.rs",
                "mod session;\npub use session::Session;\npub struct Hub(Vec<Session>);\n",
            ),
            ("hub/session.rs", "use super::Hub;\npub struct Session;\n"),
        ];
        assert_eq!(
            circle_names(&uses_it),
            vec![vec!["hub/mod.rs", "hub/session.rs"]]
        );
        // In a file that is no facade, `pub use` is a dependency like any `use`.
        let leaf = [
            ("lib.rs", "mod a;\nmod b;\n"),
            ("a.rs", "pub use crate::b::B;\n"),
            ("b.rs", ""),
        ];
        assert_eq!(edges(&leaf), pairs(&[("a.rs", "b.rs")]));
    }

    #[test]
    fn resolves_the_longest_module_prefix_and_use_trees() {
        let a = "use crate::{hub::{self, session::Foo}, hub::gone::Bar};\nuse tokio::sync::Mutex;\nuse std::fmt;\nfn f() {\n    crate::x();\n}\n";
        let files = [
            ("main.rs", "mod a;\nmod hub;\nfn x() {}\n"),
            ("a.rs", a),
            ("hub/mod.rs", "mod session;\n"),
            ("hub/session.rs", "fn g() {\n    super::super::a::h();\n}\n"),
        ];
        let krate = Crate::from_sources("src", &files);
        let e = krate.edges();
        let got: Vec<String> = e.iter().map(|e| krate.describe(e)).collect();
        assert_eq!(
            got,
            [
                "src/a.rs -> src/hub/mod.rs  (a.rs:1 crate::hub, a.rs:1 crate::hub::gone::Bar)",
                "src/a.rs -> src/hub/session.rs  (a.rs:1 crate::hub::session::Foo)",
                "src/a.rs -> src/main.rs  (a.rs:5 crate::x)",
                "src/hub/session.rs -> src/a.rs  (hub/session.rs:2 super::super::a::h)",
            ]
        );
    }

    #[test]
    fn measures_functions_from_fn_line_to_closing_brace() {
        let src = format!(
            "pub trait T {{\n    fn declared(&self) -> [u8; 4];\n}}\n\n{}\nimpl S {{\n    pub(crate) async fn g(\n        x: u8,\n    ) -> u8 {{\n        x\n    }}\n}}\n",
            fn_of(101)
        );
        let f = parley_tests::arch::SourceFile::parse("a.rs", &src, None);
        let spans: Vec<(String, usize, usize)> = f
            .functions()
            .into_iter()
            .map(|s| (s.name, s.line, s.lines))
            .collect();
        let want = [("long".to_string(), 5, 101), ("g".to_string(), 108, 5)];
        assert_eq!(spans, want);
        assert!(
            f.functions()[0].lines > super::MAX_FN_LINES,
            "101 lines are caught"
        );
        let hundred = parley_tests::arch::SourceFile::parse("b.rs", &fn_of(100), None);
        assert_eq!(
            hundred.functions()[0].lines,
            super::MAX_FN_LINES,
            "100 lines pass"
        );
        let tests = format!("#[cfg(test)]\nmod tests {{\n{}}}\n", fn_of(150));
        let tests = parley_tests::arch::SourceFile::parse("c.rs", &tests, None);
        assert!(tests.functions().is_empty());
    }

    #[test]
    fn counts_lines_of_code() {
        let src = "//! Doc.\n\nuse std::fmt; // trailing\n/*\n  block\n*/\nconst S: &str = \"a\n\nb // c\";\n\n#[cfg(test)]\nmod tests {\n    fn t() {}\n}\n";
        let f = parley_tests::arch::SourceFile::parse("a.rs", src, None);
        // `use`, `const S …"a`, `b // c";` (the empty line inside the string is blank).
        assert_eq!(f.code_lines(), 3);
        let masked = mask_rust("let c = '\"'; let l: &'a str = \"}\"; // {\n");
        assert_eq!(masked, ["let c = '_'; let l: &'a str = \"_\"; "]);
    }

    #[test]
    fn counts_javascript_lines_of_code() {
        let js = "// c\n/* a\n b */\nconst u = 'http://x'; // y\nconst t = `\n// kept\n`;\n\n";
        assert_eq!(js_code_lines(js), 4);
    }

    #[test]
    fn a_binary_beside_its_library_reaches_it_by_name() {
        let main = "use clap::Parser;\nuse parley_server::{app::serve, hub};\nfn main() {\n    parley_server::hub::run();\n    crate::helper();\n}\nfn helper() {}\n";
        let files = [
            ("main.rs", main),
            ("lib.rs", "mod app;\nmod hub;\npub use app::serve;\n"),
            ("app.rs", "use crate::hub::Hub;\n"),
            ("hub.rs", "pub struct Hub;\n"),
        ];
        let krate = Crate::from_sources("src", &files).with_lib_name("parley-server");
        let got: Vec<String> = krate.edges().iter().map(|e| krate.describe(e)).collect();
        assert_eq!(
            got,
            [
                "src/app.rs -> src/hub.rs  (app.rs:1 crate::hub::Hub)",
                "src/main.rs -> src/app.rs  (main.rs:2 parley_server::app::serve)",
                "src/main.rs -> src/hub.rs  (main.rs:2 parley_server::hub, main.rs:4 parley_server::hub::run)",
            ]
        );
        // `main` is layered too: below the library's root it may not reach up.
        let layers: &[&[&str]] = &[&["lib"], &["main"], &["app"], &["hub"]];
        let found = layer_violations(&krate, &krate.edges(), layers, &[]);
        assert!(found.is_empty(), "{found:?}");
        let layers: &[&[&str]] = &[&["lib"], &["app"], &["main"], &["hub"]];
        let found = layer_violations(&krate, &krate.edges(), layers, &[]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("`main` (layer 2) -> `app` (layer 1), points up"));
    }

    #[test]
    fn layers_flag_upward_same_layer_and_unknown_modules() {
        let files = [
            (
                "main.rs",
                "mod acl;\nmod auth;\nmod config;\nmod store;\nmod extra;\nuse crate::config::C;\n",
            ),
            ("config.rs", "use crate::store::S;\n"),
            ("store.rs", "use crate::config::C;\n"),
            ("acl.rs", "use crate::auth::A;\nuse crate::extra::E;\n"),
            ("auth.rs", "use crate::acl::Acl;\n"),
            ("extra.rs", ""),
        ];
        let krate = Crate::from_sources("src", &files);
        let layers: &[&[&str]] = &[&["main"], &["config"], &["acl", "auth"], &["store"]];
        let found = layer_violations(&krate, &krate.edges(), layers, &[("auth", "acl")]);
        let want = [
            "unknown top-level module `extra` (src/extra.rs): place it in LAYERS",
            "`acl` (layer 2) -> `auth` (layer 2), same layer, not in SAME_LAYER_ALLOWED: src/acl.rs -> src/auth.rs  (acl.rs:1 crate::auth::A)",
            "`store` (layer 3) -> `config` (layer 1), points up: src/store.rs -> src/config.rs  (store.rs:1 crate::config::C)",
        ];
        assert_eq!(found, want);
    }
}
