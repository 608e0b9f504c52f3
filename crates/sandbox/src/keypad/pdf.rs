//! A minimal PDF 1.4 writer: A4 pages of Helvetica text and thin rules,
//! uncompressed, with a correct xref table. Output is a pure function of its
//! input (no dates, no ids), so a document's bytes never change.
use std::fmt::Write;

pub const PAGE_WIDTH: i32 = 595;
pub const PAGE_HEIGHT: i32 = 842;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Font {
    Regular,
    Bold,
}

#[derive(Clone, Debug)]
enum Item {
    /// Text with its left edge at `x` (or its right edge when `right`).
    Text {
        x: i32,
        y: i32,
        size: i32,
        font: Font,
        right: bool,
        text: String,
    },
    Rule {
        x1: i32,
        x2: i32,
        y: i32,
    },
}

/// One page being laid out; coordinates in points from the bottom left.
#[derive(Clone, Debug, Default)]
pub struct Page {
    items: Vec<Item>,
}

impl Page {
    pub fn text(&mut self, x: i32, y: i32, size: i32, font: Font, text: impl Into<String>) {
        self.items.push(Item::Text {
            x,
            y,
            size,
            font,
            right: false,
            text: text.into(),
        });
    }

    /// Text ending at `x` (amount columns). Widths are Helvetica's.
    pub fn text_right(&mut self, x: i32, y: i32, size: i32, text: impl Into<String>) {
        self.items.push(Item::Text {
            x,
            y,
            size,
            font: Font::Regular,
            right: true,
            text: text.into(),
        });
    }

    pub fn rule(&mut self, x1: i32, x2: i32, y: i32) {
        self.items.push(Item::Rule { x1, x2, y });
    }

    fn content(&self) -> String {
        let mut s = String::new();
        for item in &self.items {
            match item {
                Item::Text {
                    x,
                    y,
                    size,
                    font,
                    right,
                    text,
                } => {
                    let font = match font {
                        Font::Regular => "F1",
                        Font::Bold => "F2",
                    };
                    // Thousandths of a point, so layout needs no float.
                    let mut x_milli = i64::from(*x) * 1000;
                    if *right {
                        x_milli -= text_width(text) * i64::from(*size);
                    }
                    let _ = writeln!(
                        s,
                        "BT /{font} {size} Tf {}.{:03} {y} Td {} Tj ET",
                        x_milli.div_euclid(1000),
                        x_milli.rem_euclid(1000),
                        pdf_string(text)
                    );
                }
                Item::Rule { x1, x2, y } => {
                    let _ = writeln!(s, "0.5 w {x1} {y} m {x2} {y} l S");
                }
            }
        }
        s
    }
}

/// Helvetica advance widths (1/1000 em) of ASCII 32..=126.
const HELVETICA: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278,
    278, // ' '..'/'
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584,
    556, // '0'..'?'
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722,
    778, // '@'..'O'
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469,
    556, // 'P'..'_'
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556,
    556, // '`'..'o'
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584, // 'p'..'~'
];

/// Width of `text` in Helvetica at size 1, in thousandths of a point.
fn text_width(text: &str) -> i64 {
    text.chars()
        .map(|c| match c {
            ' '..='~' => i64::from(HELVETICA[c as usize - 32]),
            _ => 556,
        })
        .sum()
}

/// A PDF literal string in WinAnsiEncoding (Latin-1 letters as octal escapes).
fn pdf_string(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 2);
    s.push('(');
    for c in text.chars() {
        match c {
            '(' | ')' | '\\' => {
                s.push('\\');
                s.push(c);
            }
            ' '..='~' => s.push(c),
            '\u{a0}'..='\u{ff}' => {
                let _ = write!(s, "\\{:03o}", c as u32);
            }
            _ => s.push('?'),
        }
    }
    s.push(')');
    s
}

/// The bytes of a PDF holding `pages`, with `title` in its info dictionary.
pub fn write(title: &str, pages: &[Page]) -> Vec<u8> {
    // Objects: 1 catalog, 2 page tree, 3–4 fonts, 5 info, then a page and
    // its content stream per page.
    let mut objects: Vec<Vec<u8>> = Vec::with_capacity(5 + 2 * pages.len());
    let kids: Vec<String> = (0..pages.len())
        .map(|i| format!("{} 0 R", 6 + 2 * i))
        .collect();
    objects.push(b"<< /Type /Catalog /Pages 2 0 R >>".to_vec());
    objects.push(
        format!(
            "<< /Type /Pages /Kids [{}] /Count {} >>",
            kids.join(" "),
            pages.len()
        )
        .into_bytes(),
    );
    for base in ["Helvetica", "Helvetica-Bold"] {
        objects.push(
            format!(
                "<< /Type /Font /Subtype /Type1 /BaseFont /{base} /Encoding /WinAnsiEncoding >>"
            )
            .into_bytes(),
        );
    }
    objects.push(
        format!(
            "<< /Title {} /Producer (bankbridge sandbox) >>",
            pdf_string(title)
        )
        .into_bytes(),
    );
    for (i, page) in pages.iter().enumerate() {
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_WIDTH} {PAGE_HEIGHT}] \
                 /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents {} 0 R >>",
                7 + 2 * i
            )
            .into_bytes(),
        );
        let content = page.content();
        let mut stream = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
        stream.extend_from_slice(content.as_bytes());
        stream.extend_from_slice(b"\nendstream");
        objects.push(stream);
    }

    // A binary comment line after the header marks the file as binary.
    let mut out: Vec<u8> = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    let mut table = format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1);
    for off in offsets {
        // Each entry is exactly 20 bytes, its end of line being " \n".
        let _ = writeln!(table, "{off:010} 00000 n ");
    }
    let _ = write!(
        table,
        "trailer\n<< /Size {} /Root 1 0 R /Info 5 0 R >>\nstartxref\n{xref}\n%%EOF\n",
        objects.len() + 1
    );
    out.extend_from_slice(table.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xref_offsets_point_at_objects() {
        let mut p = Page::default();
        p.text(50, 800, 12, Font::Bold, "Relevé (test) \\ ok");
        p.text_right(545, 780, 9, "-1234,56");
        p.rule(50, 545, 770);
        let pdf = write("Titre é", &[p.clone(), p]);
        assert!(pdf.starts_with(b"%PDF-1.4\n"));
        assert!(pdf.ends_with(b"%%EOF\n"));
        let text = String::from_utf8_lossy(&pdf);
        let startxref: usize = text
            .rsplit("startxref\n")
            .next()
            .and_then(|t| t.lines().next())
            .and_then(|l| l.parse().ok())
            .unwrap();
        assert!(pdf[startxref..].starts_with(b"xref\n0 10\n"));
        let table = &text[text.find("xref\n0 10\n").unwrap() + 10..];
        for (i, line) in table.split_inclusive('\n').skip(1).take(9).enumerate() {
            assert_eq!(line.len(), 20);
            let off: usize = line[..10].parse().unwrap();
            assert!(
                pdf[off..].starts_with(format!("{} 0 obj\n", i + 1).as_bytes()),
                "object {}",
                i + 1
            );
        }
        assert!(text.contains("(Relev\\351 \\(test\\) \\\\ ok) Tj"));
        // Right-aligned: 8 glyphs wide at 9 pt ends at 545.
        let w = text_width("-1234,56") * 9;
        assert!(text.contains(&format!(
            "{}.{:03} 780 Td",
            (545_000 - w) / 1000,
            (545_000 - w) % 1000
        )));
    }
}
