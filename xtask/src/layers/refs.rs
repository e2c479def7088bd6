//! What one Rust source file names, read with `syn`: every path in `use`
//! trees, code, types, attributes and macro bodies, and every string literal,
//! each with its line and whether it sits in test-only code.

use std::collections::BTreeSet;

use proc_macro2::{Delimiter, Spacing, Span, TokenStream, TokenTree};
use syn::{
    Attribute, File, ImplItem, Item, ItemExternCrate, ItemMod, ItemUse, Lit, Macro, MetaList, Path,
    UseTree, VisRestricted,
    visit::{self, Visit},
};

/// Where a path leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A module path in this crate (or in its library, named by its crate
    /// name), from the root: `crate::kernel::maps::X` is `[kernel, maps, X]`.
    Local(Vec<String>),
    /// An external crate, by the name code uses (`aya`, `tcptrace_common`).
    Extern(String),
    /// Anything else: a name in scope, a variable, a type.
    Other,
}

/// One path the file names.
#[derive(Clone, Debug)]
pub struct PathRef {
    pub line: usize,
    /// As written, segments joined with `::`.
    pub text: String,
    pub target: Target,
    /// A segment (or a `use … as` name) is `Cli`.
    pub names_cli: bool,
    pub in_test: bool,
}

/// One string literal (`"…"`, `b"…"`, `c"…"`) outside attributes.
#[derive(Clone, Debug)]
pub struct StrLit {
    pub line: usize,
    pub value: String,
    pub in_test: bool,
}

/// Everything one file names.
#[derive(Debug, Default)]
pub struct Found {
    pub paths: Vec<PathRef>,
    pub literals: Vec<StrLit>,
}

/// How to read the paths of one file.
pub struct Context<'a> {
    /// The file's module path from the crate root (`kernel/maps.rs` is
    /// `[kernel, maps]`; `main.rs` and `lib.rs` are `[]`).
    pub module: Vec<String>,
    /// The library's crate name, which `main.rs` uses for the crate's modules.
    pub lib: &'a str,
    /// Whether a name is an external crate's.
    pub is_crate: &'a dyn Fn(&str) -> bool,
    /// The whole file is test-only code (declared under `#[cfg(test)]`).
    pub in_test: bool,
}

/// What `file` names, read in `cx`.
pub fn scan(file: &File, cx: &Context<'_>) -> Found {
    let mut s = Scanner {
        cx,
        module: cx.module.clone(),
        scopes: vec![declared_mods(&file.items)],
        test_depth: usize::from(cx.in_test || has_test_attr(&file.attrs)),
        attr_depth: 0,
        found: Found::default(),
    };
    s.visit_file(file);
    s.found
}

/// Names of the modules declared among `items` (`mod x;` and `mod x { … }`).
pub fn declared_mods(items: &[Item]) -> BTreeSet<String> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Mod(m) => Some(m.ident.to_string()),
            _ => None,
        })
        .collect()
}

/// Whether `attrs` make an item test-only: `#[test]`, `#[tokio::test]` and
/// the like, or `#[cfg(test)]` / `#[cfg(all(test, …))]`.
pub fn has_test_attr(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|a| {
        let path = a.path();
        if path.segments.last().is_some_and(|s| s.ident == "test") {
            return true;
        }
        match &a.meta {
            syn::Meta::List(l) if path.is_ident("cfg") => cfg_is_test(l.tokens.clone()),
            _ => false,
        }
    })
}

/// `test`, or `all(…)` with `test` among its terms (recursively).
fn cfg_is_test(tokens: TokenStream) -> bool {
    let tts: Vec<TokenTree> = tokens.into_iter().collect();
    tts.iter().enumerate().any(|(i, t)| match t {
        TokenTree::Ident(id) if id == "test" => {
            !matches!(tts.get(i + 1), Some(TokenTree::Group(_)))
        }
        TokenTree::Ident(id) if id == "all" => match tts.get(i + 1) {
            Some(TokenTree::Group(g)) => cfg_is_test(g.stream()),
            _ => false,
        },
        _ => false,
    })
}

fn line(span: Span) -> usize {
    span.start().line
}

struct Scanner<'c, 'a> {
    cx: &'c Context<'a>,
    /// The module being read (the file's, plus inline `mod`s).
    module: Vec<String>,
    /// Modules declared in each enclosing module, innermost last.
    scopes: Vec<BTreeSet<String>>,
    test_depth: usize,
    attr_depth: usize,
    found: Found,
}

impl Scanner<'_, '_> {
    /// Where `segs` lead. `whole` is true for a path that stands alone as a
    /// name (a `use` leaf): there a single segment can name a crate, while in
    /// code it is a local name.
    fn resolve(&self, segs: &[String], leading_colon: bool, whole: bool) -> Target {
        let Some(head) = segs.first() else {
            return Target::Other;
        };
        let rest = || segs[1..].to_vec();
        if leading_colon {
            return if *head == self.cx.lib {
                Target::Local(rest())
            } else if (self.cx.is_crate)(head) {
                Target::Extern(head.clone())
            } else {
                Target::Other
            };
        }
        match head.as_str() {
            "crate" | "$crate" => Target::Local(rest()),
            "self" | "super" => {
                let mut m = self.module.clone();
                let mut i = 0;
                while let Some(s) = segs.get(i) {
                    match s.as_str() {
                        "self" => {}
                        "super" => {
                            m.pop();
                        }
                        _ => break,
                    }
                    i += 1;
                }
                m.extend_from_slice(&segs[i..]);
                Target::Local(m)
            }
            h if h == self.cx.lib => Target::Local(rest()),
            h if self.scopes.last().is_some_and(|s| s.contains(h)) => {
                let mut m = self.module.clone();
                m.extend_from_slice(segs);
                Target::Local(m)
            }
            h if (whole || segs.len() > 1) && (self.cx.is_crate)(h) => Target::Extern(h.to_owned()),
            _ => Target::Other,
        }
    }

    /// Keep a path if it leads somewhere the rules look at, or names `Cli`.
    fn record(&mut self, segs: &[String], leading_colon: bool, whole: bool, at: usize, cli: bool) {
        let mut segs = segs;
        // `use a::b::{self}` names `a::b`.
        if segs.len() > 1 && segs.last().is_some_and(|s| s == "self") {
            segs = &segs[..segs.len() - 1];
        }
        // A bare `crate`, `self` or `super` in code (`pub(crate)` in a macro
        // body, a method's `self`) names no item.
        if !whole
            && segs
                .iter()
                .all(|s| matches!(s.as_str(), "crate" | "$crate" | "self" | "super"))
        {
            return;
        }
        let target = self.resolve(segs, leading_colon, whole);
        let names_cli = cli || segs.iter().any(|s| s == "Cli");
        if target == Target::Other && !names_cli {
            return;
        }
        let text = format!(
            "{}{}",
            if leading_colon { "::" } else { "" },
            segs.join("::")
        );
        self.found.paths.push(PathRef {
            line: at,
            text,
            target,
            names_cli,
            in_test: self.test_depth > 0,
        });
    }

    fn use_tree(
        &mut self,
        prefix: &mut Vec<String>,
        tree: &UseTree,
        leading_colon: bool,
        at: usize,
    ) {
        match tree {
            UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree, leading_colon, line(p.ident.span()));
                prefix.pop();
            }
            UseTree::Name(n) => {
                let mut segs = prefix.clone();
                segs.push(n.ident.to_string());
                self.record(&segs, leading_colon, true, line(n.ident.span()), false);
            }
            UseTree::Rename(r) => {
                let mut segs = prefix.clone();
                segs.push(r.ident.to_string());
                let cli = r.rename == "Cli";
                self.record(&segs, leading_colon, true, line(r.ident.span()), cli);
            }
            UseTree::Glob(_) => self.record(prefix, leading_colon, true, at, false),
            UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t, leading_colon, at);
                }
            }
        }
    }

    fn literal(&mut self, lit: &Lit) {
        if self.attr_depth > 0 {
            return;
        }
        let (value, span) = match lit {
            Lit::Str(s) => (s.value(), s.span()),
            Lit::ByteStr(b) => (String::from_utf8_lossy(&b.value()).into_owned(), b.span()),
            Lit::CStr(c) => (c.value().to_string_lossy().into_owned(), c.span()),
            _ => return,
        };
        self.found.literals.push(StrLit {
            line: line(span),
            value,
            in_test: self.test_depth > 0,
        });
    }

    /// Paths and string literals in a macro's or attribute's tokens, which
    /// syn leaves unparsed. A path is `ident (:: ident)*`, optionally after a
    /// leading `::`; a `path::{…}` group is read as a `use` tree under
    /// `path`. Paths at the top level of `tokens` get `prefix` in front.
    fn tokens(&mut self, tokens: TokenStream, prefix: &[String]) {
        let tts: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tts.len() {
            match &tts[i] {
                TokenTree::Group(g) => self.tokens(g.stream(), &[]),
                TokenTree::Literal(l) => self.literal(&Lit::new(l.clone())),
                TokenTree::Ident(id) => {
                    // A `::` before the ident is a leading one, unless it
                    // follows a name or a `>` (`Vec::<u8>::new`): then the
                    // ident continues a path already read.
                    let after_colons = i >= 2 && colon2_at(&tts, i - 2);
                    let continues = after_colons
                        && i >= 3
                        && match &tts[i - 3] {
                            TokenTree::Ident(_) => true,
                            TokenTree::Punct(p) => p.as_char() == '>',
                            _ => false,
                        };
                    // In a `path::{…}` group, only a list element's first
                    // path hangs under `path` (not the name after `as`).
                    let element_start =
                        i == 0 || matches!(&tts[i - 1], TokenTree::Punct(p) if p.as_char() == ',');
                    let prefix = if element_start { prefix } else { &[] };
                    let leading_colon = after_colons && !continues && prefix.is_empty();
                    let at = line(id.span());
                    let mut segs: Vec<String> = prefix.to_vec();
                    segs.push(id.to_string());
                    let mut j = i + 1;
                    while colon2_at(&tts, j) {
                        match tts.get(j + 2) {
                            Some(TokenTree::Ident(next)) => {
                                segs.push(next.to_string());
                                j += 3;
                            }
                            Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                                self.tokens(g.stream(), &segs);
                                j += 3;
                                break;
                            }
                            _ => break,
                        }
                    }
                    if !continues {
                        self.record(&segs, leading_colon, false, at, false);
                    }
                    i = j;
                    continue;
                }
                TokenTree::Punct(_) => {}
            }
            i += 1;
        }
    }
}

/// `::` at `tts[i]`, `tts[i + 1]`.
fn colon2_at(tts: &[TokenTree], i: usize) -> bool {
    matches!(
        (tts.get(i), tts.get(i + 1)),
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
            if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':'
    )
}

fn item_attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

impl<'ast> Visit<'ast> for Scanner<'_, '_> {
    fn visit_item(&mut self, i: &'ast Item) {
        let test = has_test_attr(item_attrs(i));
        self.test_depth += usize::from(test);
        visit::visit_item(self, i);
        self.test_depth -= usize::from(test);
    }

    fn visit_impl_item(&mut self, i: &'ast ImplItem) {
        let attrs: &[Attribute] = match i {
            ImplItem::Const(c) => &c.attrs,
            ImplItem::Fn(f) => &f.attrs,
            ImplItem::Type(t) => &t.attrs,
            ImplItem::Macro(m) => &m.attrs,
            _ => &[],
        };
        let test = has_test_attr(attrs);
        self.test_depth += usize::from(test);
        visit::visit_impl_item(self, i);
        self.test_depth -= usize::from(test);
    }

    fn visit_item_mod(&mut self, i: &'ast ItemMod) {
        for a in &i.attrs {
            self.visit_attribute(a);
        }
        if let Some((_, items)) = &i.content {
            self.module.push(i.ident.to_string());
            self.scopes.push(declared_mods(items));
            for item in items {
                self.visit_item(item);
            }
            self.scopes.pop();
            self.module.pop();
        }
    }

    fn visit_item_use(&mut self, i: &'ast ItemUse) {
        for a in &i.attrs {
            self.visit_attribute(a);
        }
        let at = line(i.use_token.span);
        self.use_tree(&mut Vec::new(), &i.tree, i.leading_colon.is_some(), at);
    }

    fn visit_item_extern_crate(&mut self, i: &'ast ItemExternCrate) {
        let at = line(i.ident.span());
        self.record(&[i.ident.to_string()], false, true, at, false);
    }

    fn visit_path(&mut self, p: &'ast Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(first) = p.segments.first() {
            let at = line(first.ident.span());
            self.record(&segs, p.leading_colon.is_some(), false, at, false);
        }
        visit::visit_path(self, p);
    }

    /// `pub(crate)`, `pub(in crate::model)`: a scope, not a dependency.
    fn visit_vis_restricted(&mut self, _: &'ast VisRestricted) {}

    fn visit_attribute(&mut self, a: &'ast Attribute) {
        // Doc comments are prose.
        if a.path().is_ident("doc") {
            return;
        }
        self.attr_depth += 1;
        visit::visit_attribute(self, a);
        self.attr_depth -= 1;
    }

    fn visit_meta_list(&mut self, m: &'ast MetaList) {
        visit::visit_meta_list(self, m);
        self.tokens(m.tokens.clone(), &[]);
    }

    fn visit_macro(&mut self, m: &'ast Macro) {
        visit::visit_macro(self, m);
        self.tokens(m.tokens.clone(), &[]);
    }

    fn visit_lit(&mut self, l: &'ast Lit) {
        self.literal(l);
    }
}
