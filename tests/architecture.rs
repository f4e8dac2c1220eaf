//! The module map of `ARCHITECTURE.md`, checked against the code: which top-level module of
//! `src/` uses which (`crate::<module>` outside comments and unit tests), and the rules the map
//! states. `cargo test --test architecture -- --nocapture` prints the graph.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The shared layer: types and plumbing every stage may use; they use only each other.
const SHARED: [&str; 9] = [
    "config",
    "db",
    "health",
    "mockstagram",
    "model",
    "retry",
    "shutdown",
    "telemetry",
    "tls",
];
/// Tools kept out of the production core (feature `tools`): only the command line uses them.
const TOOLS: [&str; 3] = ["simulator", "bench", "testing"];

fn module_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = Graph::new();
    for entry in walk(&src) {
        let relative = entry.strip_prefix(&src).unwrap();
        let module = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let uses = graph.entry(module.clone()).or_default();
        // A `tests.rs` is a module's `#[cfg(test)] mod tests;` moved beside it: test code, as
        // an inline `mod tests` is (see `crate_paths`).
        if entry.file_name().is_some_and(|name| name == "tests.rs") {
            continue;
        }
        for used in crate_paths(&std::fs::read_to_string(&entry).unwrap()) {
            if used != module {
                uses.insert(used);
            }
        }
    }
    graph
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The top-level modules a file names as `crate::x`, `crate::{x, y::z}`, outside comments and
/// its `#[cfg(test)] mod tests` (which closes every file that has one).
fn crate_paths(source: &str) -> BTreeSet<String> {
    let code: String = source
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap()
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut used = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of `crate::{a, b::{c, d}, e}`.
            let (mut depth, mut name, mut end) = (0, String::new(), group.len());
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        end = i;
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        used.insert(first_segment(&std::mem::take(&mut name)));
                    }
                    c if depth == 0 => name.push(c),
                    _ => {}
                };
            }
            used.insert(first_segment(&name));
            rest = &group[end..];
        } else {
            used.insert(first_segment(rest));
        }
    }
    used.retain(|m| !m.is_empty() && m != "self");
    used
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

fn cycle_from(graph: &Graph, start: &str) -> Option<Vec<String>> {
    fn visit(graph: &Graph, node: &str, path: &mut Vec<String>) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(graph, next, path) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    visit(graph, start, &mut Vec::new())
}

#[test]
fn the_crate_paths_of_a_file_are_its_top_level_modules() {
    let source = "use crate::{\n    api::ApiState,\n    fetch::{A, B},\n    model,\n};\n// crate::cli in a comment\nfn f() { crate::jobs::run(); }\n#[cfg(test)]\nmod tests {\n    use crate::simulator;\n}\n";
    let used: Vec<String> = crate_paths(source).into_iter().collect();
    assert_eq!(used, ["api", "fetch", "jobs", "model"]);
}

#[test]
fn dependencies_point_one_way_from_the_command_line_to_the_stages_to_shared_types() {
    let graph = module_graph();
    for (module, uses) in &graph {
        println!(
            "{module:12} -> {}",
            uses.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    for (module, uses) in &graph {
        if module != "cli" {
            let tools: Vec<_> = uses
                .iter()
                .filter(|u| TOOLS.contains(&u.as_str()) && !TOOLS.contains(&module.as_str()))
                .collect();
            assert!(
                tools.is_empty(),
                "production module {module} uses the tools {tools:?}"
            );
            assert!(!uses.contains("cli"), "{module} uses cli");
        }
        if SHARED.contains(&module.as_str()) {
            let upward: Vec<_> = uses
                .iter()
                .filter(|u| !SHARED.contains(&u.as_str()))
                .collect();
            assert!(
                upward.is_empty(),
                "shared module {module} uses the stages {upward:?}"
            );
        }
        if module != "cli" && module != "bench" {
            assert!(!uses.contains("roles"), "{module} uses roles");
        }
        if let Some(cycle) = cycle_from(&graph, module) {
            panic!("a dependency cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn architecture_md_names_every_module() {
    let map = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md");
    for module in module_graph().keys() {
        assert!(
            map.contains(&format!("`{module}`")),
            "ARCHITECTURE.md does not name the module `{module}`"
        );
    }
}

/// The names of the metrics the code emits: `counter!("name"`, `gauge!(`, `histogram!(`.
fn emitted_metrics() -> BTreeSet<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut names = BTreeSet::new();
    for file in walk(&src) {
        let source = std::fs::read_to_string(&file).unwrap();
        for macro_name in ["counter!(", "gauge!(", "histogram!("] {
            for piece in source.split(macro_name).skip(1) {
                let piece = piece.trim_start();
                if let Some(rest) = piece.strip_prefix('"') {
                    names.insert(rest.split('"').next().unwrap().to_string());
                }
            }
        }
    }
    names
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative))
        .unwrap_or_else(|e| panic!("{relative}: {e}"))
}

#[test]
fn the_monitoring_page_lists_every_metric_the_code_emits() {
    let page = read("docs/monitoring.md");
    let metrics = emitted_metrics();
    assert!(
        metrics.contains("points_written_total") && metrics.len() > 20,
        "{metrics:?}"
    );
    let missing: Vec<_> = metrics
        .iter()
        .filter(|m| !page.contains(&format!("`{m}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/monitoring.md does not list {missing:?}"
    );
}

/// The settings the code reads: every `env = "NAME"` of a flag.
fn settings_in_code() -> BTreeSet<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut names = BTreeSet::new();
    for file in walk(&src) {
        let source = std::fs::read_to_string(&file).unwrap();
        for piece in source.split("env = \"").skip(1) {
            names.insert(piece.split('"').next().unwrap().to_string());
        }
    }
    names
}

/// The routes the API serves: every `.route("...")` of `src/api/`, and the OpenAPI document's.
fn routes_in_code() -> BTreeSet<String> {
    let api = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let mut routes = BTreeSet::new();
    for file in walk(&api) {
        let source = std::fs::read_to_string(&file).unwrap();
        for marker in [".route(", "SwaggerUi::new(", ".url("] {
            for piece in source.split(marker).skip(1) {
                if let Some(rest) = piece.trim_start().strip_prefix('"') {
                    routes.insert(rest.split('"').next().unwrap().to_string());
                }
            }
        }
    }
    routes
}

/// The `code spans` of a Markdown text.
fn code_spans(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Whether a README's code span names a file or folder of the repository: its first segment is
/// one of the repository's top-level entries (`application/json` is not), and no segment is a
/// placeholder (`<scenario>`, `NAME`, `…`).
fn names_a_path(span: &str) -> bool {
    const TOP: [&str; 11] = [
        "src",
        "tests",
        "docs",
        "scripts",
        "migrations",
        "seeds",
        "monitoring",
        "assets",
        "benches",
        ".ci",
        ".sqlx",
    ];
    let root_file = !span.contains('/')
        && [".md", ".toml", ".yml", ".example"]
            .iter()
            .any(|ext| span.ends_with(ext));
    let in_tree = span
        .split_once('/')
        .is_some_and(|(first, _)| TOP.contains(&first));
    let placeholder = span.contains(['<', '{', '…', ' ', '*'])
        || span
            .split('/')
            .any(|seg| !seg.is_empty() && seg.chars().all(|c| c.is_ascii_uppercase()));
    (root_file || in_tree) && !placeholder
}

/// Issue 38: the README is a promise to users, so what it names must exist: files and folders,
/// settings (and every setting the code reads is in its table), metrics and routes.
#[test]
fn the_readme_names_only_what_exists_and_every_setting() {
    let readme = read("README.md");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spans = code_spans(&readme);
    let mut missing = Vec::new();
    // Files: code spans, and the targets of links.
    let links = readme
        .split("](")
        .skip(1)
        .map(|piece| piece.split(')').next().unwrap().to_string())
        .filter(|target| !target.starts_with("http"));
    for path in spans
        .iter()
        .filter(|s| names_a_path(s))
        .cloned()
        .chain(links)
    {
        let file = path.split('#').next().unwrap();
        if !root.join(file).exists() {
            missing.push(format!("file {path}"));
        }
    }
    // Settings: every SHOUTED name is one the code reads (or RUST_LOG, read by tracing).
    let settings = settings_in_code();
    assert!(
        settings.contains("POLL_INTERVAL") && settings.len() > 30,
        "{settings:?}"
    );
    for span in &spans {
        let shouted = span.len() > 3
            && span.contains('_')
            && span.chars().all(|c| c.is_ascii_uppercase() || c == '_');
        if shouted && !settings.contains(span) && span != "RUST_LOG" {
            missing.push(format!("setting {span}"));
        }
    }
    for setting in &settings {
        if !readme.contains(&format!("| `{setting}` |")) {
            missing.push(format!("a row for the setting {setting}"));
        }
    }
    // Metrics: every name shaped like one is one the code emits.
    let metrics = emitted_metrics();
    for span in &spans {
        let metric_shaped = span.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            && ["_total", "_seconds", "_rows", "_bytes"]
                .iter()
                .any(|suffix| span.ends_with(suffix));
        if metric_shaped && !metrics.contains(span) {
            missing.push(format!("metric {span}"));
        }
    }
    // Routes: every `METHOD /path` the README names is served.
    let routes = routes_in_code();
    assert!(routes.contains("/influencer_analytics/{id}"), "{routes:?}");
    for span in &spans {
        let Some((_, path)) = ["GET ", "POST ", "PUT ", "DELETE "]
            .iter()
            .find_map(|method| span.strip_prefix(method).map(|p| (method, p)))
        else {
            continue;
        };
        let path = path.split(['?', '[', ' ']).next().unwrap();
        let served = routes.contains(path) || routes.contains(path.trim_end_matches('/'));
        if !served {
            missing.push(format!("route {span}"));
        }
    }
    assert!(
        missing.is_empty(),
        "README.md names what does not exist: {missing:#?}"
    );
}

#[test]
fn a_path_is_told_from_a_media_type_and_a_placeholder() {
    assert!(names_a_path("src/db/mod.rs"));
    assert!(names_a_path("docs/storage.md"));
    assert!(names_a_path("ARCHITECTURE.md"));
    assert!(names_a_path(".env.example"));
    assert!(!names_a_path("application/problem+json"));
    assert!(!names_a_path("seeds/NAME"));
    assert!(!names_a_path("target/tmp/faults/<scenario>/report.txt"));
}

/// The tier tables: the hot tier, the cold tier and compaction's bookkeeping of them, which
/// only `series` reads and writes (migrations name them too).
const TIER_TABLES: [&str; 9] = [
    "influencer_metrics",
    "late_points",
    "influencer_hour_blocks",
    "influencer_segments",
    "influencer_summary_packs",
    "compaction_days",
    "influencer_day_closes",
    "rank_moments",
    "rank_blocks",
];

/// The string literals of Rust source, with the line each starts on: `"..."` with its escapes
/// and raw strings `r#"..."#`; comments and char literals skipped.
fn string_literals(source: &str) -> Vec<(usize, String)> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                line += usize::from(chars[i] == '\n');
                i += 1;
            }
            i += 2;
        } else if c == '\'' && (chars.get(i + 2) == Some(&'\'') || next == Some('\\')) {
            // A char literal ('"', '\n', '\''); a lifetime has no closing quote there.
            i += if next == Some('\\') { 4 } else { 3 };
        } else if c == 'r'
            && matches!(next, Some('"') | Some('#'))
            && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_'))
        {
            let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
            if chars.get(i + 1 + hashes) != Some(&'"') {
                i += 1;
                continue;
            }
            let start = i + 2 + hashes;
            let close: String = std::iter::once('"')
                .chain("#".repeat(hashes).chars())
                .collect();
            let rest: String = chars[start..].iter().collect();
            let end = rest.find(&close).expect("a closed raw string");
            let text = rest[..end].to_string();
            out.push((line, text.clone()));
            line += text.matches('\n').count();
            i = start + text.chars().count() + close.chars().count();
        } else if c == '"' {
            let mut text = String::new();
            i += 1;
            let start_line = line;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    text.push(chars[i]);
                    i += 1;
                }
                line += usize::from(chars[i] == '\n');
                text.push(chars[i]);
                i += 1;
            }
            out.push((start_line, text));
            i += 1;
        } else {
            i += 1;
        }
    }
    out
}

/// Whether `text` names `table` as a word of its own (`late_points_total` is not `late_points`).
fn names_table(text: &str, table: &str) -> bool {
    text.match_indices(table).any(|(at, _)| {
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let before = text[..at].chars().next_back();
        let after = text[at + table.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

#[test]
fn string_literals_are_told_from_comments_and_chars() {
    let source = "let a = '\"'; // \"in a comment\"\nlet b = \"one \\\" two\";\n/* \"no\" */ let c = r#\"raw \"x\"\"#; fn f<'a>(x: &'a str) {}";
    let found: Vec<_> = string_literals(source)
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(
        found,
        vec!["one \\\" two".to_string(), "raw \"x\"".to_string()]
    );
    assert!(names_table("select 1 from late_points l", "late_points"));
    assert!(!names_table("late_points_merged_total", "late_points"));
}

#[test]
fn only_series_names_the_tier_tables_in_sql() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let series = src.join("series");
    let mut outside = Vec::new();
    let mut in_series = BTreeSet::new();
    for file in walk(&src) {
        let source = std::fs::read_to_string(&file).unwrap();
        for (line, text) in string_literals(&source) {
            for table in TIER_TABLES {
                if file.starts_with(&series) {
                    if names_table(&text, table) {
                        in_series.insert(table);
                    }
                } else if names_table(&text, table) {
                    let relative = file.strip_prefix(&src).unwrap().display();
                    outside.push(format!("src/{relative}:{line} names {table}"));
                }
            }
        }
    }
    // The scan sees the statements where they are.
    assert_eq!(in_series.len(), TIER_TABLES.len(), "{in_series:?}");
    assert!(
        outside.is_empty(),
        "tier tables are series' own; outside src/series/:\n{}",
        outside.join("\n")
    );
}

/// The longest a file under `src/` may be, and a function in it (signature to closing brace):
/// rooms a newcomer can hold in mind.
const MAX_FILE_LINES: usize = 600;
const MAX_FUNCTION_LINES: usize = 80;

/// The functions of Rust source as (name, first line, lines): an `fn` item from its line to
/// the closing brace at its indentation (a declaration without a body is none).
fn functions(source: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = source.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let mut rest = trimmed;
        for prefix in [
            "pub(crate) ",
            "pub(super) ",
            "pub ",
            "const ",
            "async ",
            "unsafe ",
        ] {
            rest = rest.strip_prefix(prefix).unwrap_or(rest);
        }
        let Some(name) = rest.strip_prefix("fn ") else {
            continue;
        };
        let name: String = name
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let signature_end = lines[i].trim_end();
        if signature_end.ends_with(';') {
            continue; // a declaration: no body
        }
        if signature_end.ends_with('}') {
            out.push((name, i + 1, 1)); // a body on one line
            continue;
        }
        let closing = format!("{}}}", " ".repeat(indent));
        if let Some(k) = lines[i + 1..].iter().position(|l| l.trim_end() == closing) {
            out.push((name, i + 1, k + 2));
        }
    }
    out
}

#[test]
fn functions_are_measured_from_their_signature_to_their_closing_brace() {
    let source = "fn a() {\n    let x = 1;\n}\n\nimpl T {\n    pub async fn b(\n        x: u8,\n    ) -> u8 {\n        x\n    }\n    fn c(&self) -> u8 { 1 }\n    fn d(&self);\n    fn e() {\n    }\n}\n";
    assert_eq!(
        functions(source),
        vec![
            ("a".to_string(), 1, 3),
            ("b".to_string(), 6, 5),
            ("c".to_string(), 11, 1),
            ("e".to_string(), 13, 2),
        ]
    );
}

#[test]
fn no_file_over_600_lines_and_no_function_over_80() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut too_big = Vec::new();
    let mut measured = 0;
    for file in walk(&src) {
        let source = std::fs::read_to_string(&file).unwrap();
        let relative = file.strip_prefix(&src).unwrap().display().to_string();
        let lines = source.lines().count();
        if lines > MAX_FILE_LINES {
            too_big.push(format!("src/{relative}: {lines} lines"));
        }
        for (name, line, length) in functions(&source) {
            measured += 1;
            if length > MAX_FUNCTION_LINES {
                too_big.push(format!("src/{relative}:{line} fn {name}: {length} lines"));
            }
        }
    }
    assert!(measured > 500, "only {measured} functions found");
    assert!(
        too_big.is_empty(),
        "over {MAX_FILE_LINES} lines a file or {MAX_FUNCTION_LINES} a function:\n{}",
        too_big.join("\n")
    );
}

/// Runtime statements of `src/` whose text is a literal: `sqlx::query`, `query_as` or
/// `query_scalar` called (with or without a turbofish) on a string literal, as (line, call).
/// A fixed statement belongs in sqlx's `query!` macros, which check it against the schema at
/// compile time; the runtime functions take only the statements built at run time (a chunk's
/// name, a cold window, a benchmark's own scratch table).
fn literal_runtime_statements(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for call in ["sqlx::query(", "sqlx::query_as(", "sqlx::query_scalar("]
        .into_iter()
        .chain(["sqlx::query_as::<", "sqlx::query_scalar::<"])
    {
        let mut from = 0;
        while let Some(at) = source[from..].find(call) {
            let start = from + at;
            from = start + call.len();
            let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
            if source[line_start..start].trim_start().starts_with("//") {
                continue;
            }
            let mut rest = &source[from..];
            if call.ends_with('<') {
                // Past the turbofish and its opening parenthesis.
                let Some(open) = rest.find(">(") else {
                    continue;
                };
                rest = &rest[open + 2..];
            }
            let argument = rest.trim_start();
            if argument.starts_with('"')
                || argument.starts_with("r\"")
                || argument.starts_with("r#")
            {
                let line = source[..start].matches('\n').count() + 1;
                found.push((line, call.trim_end_matches(['(', '<']).to_string()));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn literal_statements_are_told_from_built_ones() {
    let source = "let a = sqlx::query(\"select 1\");\n\
                  let b = sqlx::query(&format!(\"drop table {t}\"));\n\
                  let c = sqlx::query_scalar::<_, i64>(\n    r#\"select 2\"#);\n\
                  // sqlx::query(\"in a comment\")\n\
                  let d = sqlx::query!(\"select 3\");\n\
                  let e = sqlx::query_as(statement);";
    assert_eq!(
        literal_runtime_statements(source),
        vec![
            (1, "sqlx::query".to_string()),
            (3, "sqlx::query_scalar::".to_string())
        ]
    );
}

#[test]
fn fixed_statements_are_checked_by_the_compiler() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (mut unchecked, mut checked) = (Vec::new(), 0);
    for file in walk(&src) {
        let source = std::fs::read_to_string(&file).unwrap();
        checked += ["sqlx::query!(", "sqlx::query_as!(", "sqlx::query_scalar!("]
            .iter()
            .map(|m| source.matches(m).count())
            .sum::<usize>();
        let relative = file.strip_prefix(&src).unwrap().display();
        for (line, call) in literal_runtime_statements(&source) {
            unchecked.push(format!("src/{relative}:{line}: {call} on a literal"));
        }
    }
    // The scan reads the statements where they are.
    assert!(checked >= 100, "only {checked} checked statements found");
    assert!(
        unchecked.is_empty(),
        "a fixed statement goes through sqlx::query!/query_as!/query_scalar! (scripts/sqlx-prepare \
         then writes .sqlx/):\n{}",
        unchecked.join("\n")
    );
}

/// The top-level modules of the library that `source` names: `influencer_analytics::x`, or `x`
/// in a `use influencer_analytics::{…}` list.
fn modules_named_in(source: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for (at, _) in source.match_indices("influencer_analytics::") {
        let rest = &source[at + "influencer_analytics::".len()..];
        let Some(list) = rest.strip_prefix('{') else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            named.insert(name);
            continue;
        };
        // The list's top-level names: at depth 0 of its braces, each first in its item.
        let (mut depth, mut name, mut first) = (0, String::new(), true);
        let in_name = |c: char| c.is_alphanumeric() || c == '_';
        for c in list.chars() {
            if !in_name(c) && !name.is_empty() {
                named.insert(std::mem::take(&mut name));
                first = false;
            }
            match c {
                '}' if depth == 0 => break,
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => first = true,
                c if depth == 0 && first && in_name(c) => name.push(c),
                _ => {}
            }
        }
        if !name.is_empty() {
            named.insert(name);
        }
    }
    named
}

#[test]
fn the_modules_a_file_names_are_read_from_paths_and_use_lists() {
    let source = "use influencer_analytics::{config::{A, B}, series, testing::TestDb};\n\
                  use influencer_analytics::{\n    model::follower_ratio,\n    roles::Roles,\n};\n\
                  let x = influencer_analytics::db::open();";
    let expected = ["config", "db", "model", "roles", "series", "testing"];
    assert_eq!(
        modules_named_in(source),
        expected.iter().map(|m| m.to_string()).collect()
    );
}

#[test]
fn the_library_exports_only_the_modules_its_users_name() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut users = walk(&root.join("tests"));
    users.extend(walk(&root.join("benches")));
    users.push(root.join("src/main.rs"));
    let named: BTreeSet<String> = users
        .iter()
        .flat_map(|file| modules_named_in(&std::fs::read_to_string(file).unwrap()))
        .collect();
    let lib = read("src/lib.rs");
    let exported: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_string())
        .collect();
    // The scan reads what is there: the binary's door, and the tests'.
    assert!(
        named.contains("cli") && named.contains("testing"),
        "{named:?}"
    );
    assert!(exported.len() >= 15, "{exported:?}");
    let needless: Vec<&String> = exported.difference(&named).collect();
    assert!(
        needless.is_empty(),
        "exported, but neither the binary nor a test nor a bench names them (make them \
         `pub(crate) mod`, so the compiler reports what nothing uses): {needless:?}"
    );
}
