//! Manual pages: `hushd(8)` and one page per subcommand from the clap definition, and
//! `hushd.toml(5)` rendered from `config/README.md`, the one reference of every config and list
//! key, so the page and the README cannot say different things. `hushd generate man DIR`
//! writes them; the Debian package ships them.

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use roff::{Inline, Roff, bold, italic, line_break, roman};

/// The config reference, compiled in: the page is rendered from exactly the text in the tree.
pub const CONFIG_REFERENCE: &str = include_str!("../config/README.md");

/// One manual page: its file name (`hushd.8`) and its roff source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub file_name: String,
    pub roff: String,
}

/// `hushd(8)` and `hushd-SUB(8)` for each visible subcommand (nested ones too:
/// `hushd-evidence-forget(8)`), each ending in a SEE ALSO that points at the others.
pub fn command_pages(cmd: clap::Command, date: &str) -> Vec<Page> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    collect_command_pages(&cmd, date, &mut pages);
    let names: Vec<String> = pages
        .iter()
        .map(|p| page_ref(&p.file_name))
        .chain(std::iter::once("hushd.toml(5)".to_owned()))
        .collect();
    for page in &mut pages {
        let own = page_ref(&page.file_name);
        let others: Vec<&str> = names
            .iter()
            .filter(|n| **n != own)
            .map(String::as_str)
            .collect();
        page.roff.push_str(&see_also(&others));
    }
    pages
}

fn collect_command_pages(cmd: &clap::Command, date: &str, pages: &mut Vec<Page>) {
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .date(date)
        .manual("hushd manual");
    let mut roff = Vec::new();
    // Writing into a Vec cannot fail.
    if man.render(&mut roff).is_ok() {
        pages.push(Page {
            file_name: man.get_filename(),
            roff: String::from_utf8_lossy(&roff).into_owned(),
        });
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect_command_pages(sub, date, pages);
    }
}

/// `hushd-check.8` -> `hushd-check(8)`.
fn page_ref(file_name: &str) -> String {
    match file_name.rsplit_once('.') {
        Some((name, section)) => format!("{name}({section})"),
        None => file_name.to_owned(),
    }
}

fn see_also(pages: &[&str]) -> String {
    let mut roff = Roff::new();
    roff.control("SH", ["SEE ALSO"]);
    let mut line = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        if i > 0 {
            line.push(roman(", "));
        }
        let (name, section) = page.split_once('(').unwrap_or((page, ""));
        line.push(bold(name));
        line.push(roman(format!("({section}")));
    }
    roff.text(line);
    // Without the preamble roff's writer adds each time: the page already has it.
    roff.to_roff()
}

/// `hushd.toml(5)` from the config reference's markdown: `#` becomes DESCRIPTION, `##` a
/// section, `###` a subsection, a key table a tagged paragraph per key (key, then each further
/// column labelled with its header, the last one as running text), code blocks stay verbatim.
pub fn config_page(markdown: &str, version: &str, date: &str) -> Page {
    let mut out = Roff::new();
    let source = format!("hushd {version}");
    out.control("TH", ["HUSHD.TOML", "5", date, &source, "hushd manual"]);
    out.control("SH", ["NAME"]);
    out.text([roman(
        "hushd.toml - configuration file and list files of the hushd DNS sinkhole",
    )]);
    out.control("SH", ["SYNOPSIS"]);
    out.text([bold("/etc/hushd/hushd.toml")]);
    out.control("br", []);
    out.text([
        bold("/etc/hushd/blocklists/"),
        italic("NAME"),
        bold(".toml"),
    ]);
    MarkdownToRoff::new(&mut out).convert(markdown);
    out.control("SH", ["FILES"]);
    out.control("TP", []);
    out.text([bold("/etc/hushd/hushd.toml")]);
    out.text([roman(
        "the config the packaged service reads; run hushd check after editing it, then systemctl reload hushd.",
    )]);
    out.control("TP", []);
    out.text([bold("/etc/hushd/blocklists/")]);
    out.text([roman("the shipped lists; edits apply live.")]);
    out.control("TP", []);
    out.text([bold("/var/lib/hushd/")]);
    out.text([roman(
        "the service's state: stored list subscriptions and the evidence store.",
    )]);
    out.control("SH", ["SEE ALSO"]);
    out.text([
        bold("hushd"),
        roman("(8), "),
        bold("hushd-check"),
        roman("(8)"),
    ]);
    Page {
        file_name: "hushd.toml.5".to_owned(),
        roff: out.render(),
    }
}

/// Walks pulldown-cmark's events and writes roff. Inline text gathers in `line` until the
/// block that holds it ends.
struct MarkdownToRoff<'r> {
    out: &'r mut Roff,
    line: Vec<Inline>,
    bold: usize,
    italic: usize,
    heading: Option<HeadingLevel>,
    in_code_block: bool,
    table: Option<Table>,
}

#[derive(Default)]
struct Table {
    header: Vec<String>,
    in_head: bool,
    row: Vec<Vec<Inline>>,
}

impl<'r> MarkdownToRoff<'r> {
    fn new(out: &'r mut Roff) -> Self {
        Self {
            out,
            line: Vec::new(),
            bold: 0,
            italic: 0,
            heading: None,
            in_code_block: false,
            table: None,
        }
    }

    fn convert(mut self, markdown: &str) {
        for event in Parser::new_ext(markdown, Options::ENABLE_TABLES) {
            self.event(event);
        }
    }

    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(text) if self.in_code_block => {
                for line in text.lines() {
                    self.out.text([roman(line)]);
                }
            }
            Event::Text(text) => self.push_text(&text),
            Event::Code(code) => self.line.push(bold(code.as_ref())),
            Event::SoftBreak => self.push_text(" "),
            Event::HardBreak => self.line.push(line_break()),
            // Html, footnotes, rules, math: the reference has none worth a man page.
            _ => {}
        }
    }

    fn push_text(&mut self, text: &str) {
        let inline = if self.bold > 0 {
            bold(text)
        } else if self.italic > 0 {
            italic(text)
        } else {
            roman(text)
        };
        self.line.push(inline);
    }

    fn start(&mut self, tag: Tag<'_>) {
        match tag {
            Tag::Heading { level, .. } => self.heading = Some(level),
            Tag::Paragraph if self.table.is_none() => {
                self.out.control("PP", []);
            }
            Tag::CodeBlock(_) => {
                self.out.control("PP", []);
                self.out.control("RS", ["4"]);
                self.out.control("nf", []);
                self.in_code_block = true;
            }
            Tag::Item => {
                self.out.control("IP", [r"\(bu", "2"]);
            }
            Tag::Strong => self.bold += 1,
            Tag::Emphasis => self.italic += 1,
            Tag::Table(_) => self.table = Some(Table::default()),
            Tag::TableHead => {
                if let Some(t) = &mut self.table {
                    t.in_head = true;
                }
            }
            _ => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Heading(_) => {
                let text = plain_text(&std::mem::take(&mut self.line));
                match self.heading.take() {
                    Some(HeadingLevel::H1) => self.out.control("SH", ["DESCRIPTION"]),
                    Some(HeadingLevel::H2) => self.out.control("SH", [text.as_str()]),
                    _ => self.out.control("SS", [text.as_str()]),
                };
            }
            TagEnd::Paragraph | TagEnd::Item if self.table.is_none() => self.flush(),
            TagEnd::CodeBlock => {
                self.out.control("fi", []);
                self.out.control("RE", []);
                self.in_code_block = false;
            }
            TagEnd::Strong => self.bold = self.bold.saturating_sub(1),
            TagEnd::Emphasis => self.italic = self.italic.saturating_sub(1),
            TagEnd::TableCell => {
                let cell = std::mem::take(&mut self.line);
                if let Some(t) = &mut self.table {
                    if t.in_head {
                        t.header.push(plain_text(&cell));
                    } else {
                        t.row.push(cell);
                    }
                }
            }
            TagEnd::TableHead => {
                if let Some(t) = &mut self.table {
                    t.in_head = false;
                }
            }
            TagEnd::TableRow => {
                if let Some(t) = &mut self.table {
                    let row = std::mem::take(&mut t.row);
                    let header = t.header.clone();
                    self.table_row(&header, row);
                }
            }
            TagEnd::Table => self.table = None,
            _ => {}
        }
    }

    fn flush(&mut self) {
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            self.out.text(line);
        }
    }

    /// A key row: the first cell is the tag, the other cells are labelled with their column's
    /// header (`Default: 10`), except the description (the `meaning` column).
    fn table_row(&mut self, header: &[String], mut row: Vec<Vec<Inline>>) {
        if row.is_empty() {
            return;
        }
        let tag = row.remove(0);
        self.out.control("TP", []);
        self.out
            .text(if tag.is_empty() { vec![roman("")] } else { tag });
        let cells: Vec<_> = row
            .into_iter()
            .enumerate()
            .filter(|(_, c)| !c.is_empty())
            .collect();
        let count = cells.len();
        for (n, (i, cell)) in cells.into_iter().enumerate() {
            let label = header.get(i + 1).map_or("", String::as_str);
            let mut line = Vec::new();
            if !label.is_empty() && label != "meaning" {
                line.push(italic(format!("{}:", capitalize(label))));
                line.push(roman(" "));
            }
            line.extend(cell);
            self.out.text(line);
            if n + 1 < count {
                self.out.control("br", []);
            }
        }
    }
}

fn plain_text(inlines: &[Inline]) -> String {
    inlines
        .iter()
        .map(|i| match i {
            Inline::Roman(s) | Inline::Italic(s) | Inline::Bold(s) => s.as_str(),
            Inline::LineBreak => " ",
        })
        .collect()
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_table_becomes_tagged_paragraphs() {
        let md = "# Configuration\n\nIntro.\n\n## `[cache]`\n\n| key | default | meaning |\n|---|---|---|\n| `size` | `10000` | answers kept; `0` turns it off. |\n";
        let page = config_page(md, "1.2.3", "2026-01-02");
        assert_eq!(page.file_name, "hushd.toml.5");
        let roff = page.roff;
        assert!(
            roff.contains(".TH HUSHD.TOML 5 2026-01-02 \"hushd 1.2.3\""),
            "{roff}"
        );
        assert!(roff.contains(".SH DESCRIPTION\n.PP\nIntro."), "{roff}");
        assert!(roff.contains(".SH [cache]\n"), "{roff}");
        assert!(
            roff.contains(
                ".TP\n\\fBsize\\fR\n\\fIDefault:\\fR \\fB10000\\fR\n.br\nanswers kept; \\fB0\\fR turns it off.\n"
            ),
            "{roff}"
        );
    }

    #[test]
    fn code_blocks_stay_verbatim_and_lines_starting_with_a_dot_are_escaped() {
        let md = "```toml\n[evidence]\n.hidden = 1\n```\n";
        let roff = config_page(md, "0", "2026-01-02").roff;
        assert!(
            roff.contains(".nf\n[evidence]\n\\&.hidden = 1\n.fi\n"),
            "{roff}"
        );
    }

    #[test]
    fn escaped_pipes_in_cells_are_text() {
        let md = "| key | meaning |\n|---|---|\n| `a` | `\"block\" \\| \"log\"` |\n";
        let roff = config_page(md, "0", "2026-01-02").roff;
        assert!(roff.contains("\\fB\"block\" | \"log\"\\fR"), "{roff}");
    }

    #[test]
    fn subcommand_pages_point_at_each_other() {
        let cmd = clap::Command::new("hushd")
            .version("1")
            .about("a daemon")
            .subcommand(clap::Command::new("check").about("checks"))
            .subcommand(clap::Command::new("secret").hide(true));
        let pages = command_pages(cmd, "2026-01-02");
        let names: Vec<&str> = pages.iter().map(|p| p.file_name.as_str()).collect();
        assert_eq!(names, ["hushd.8", "hushd-check.8"]);
        assert!(
            pages[0]
                .roff
                .contains(".SH \"SEE ALSO\"\n\\fBhushd\\-check\\fR(8), \\fBhushd.toml\\fR(5)\n"),
            "{}",
            pages[0].roff
        );
        assert!(!pages[0].roff.contains("secret"), "{}", pages[0].roff);
    }
}
