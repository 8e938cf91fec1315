//! Output for people (aligned tables) and scripts (`--output json`).

use comfy_table::{presets::NOTHING, Cell, CellAlignment, Table};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Whitespace-aligned columns with UPPERCASE headers (rpk style).
    Table,
    /// One JSON document (or JSON lines for streams).
    Json,
}

/// A whitespace-aligned table with the given headers and rows; numbers right-aligned.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(headers.iter().map(Cell::new));
    for row in rows {
        t.add_row(row.into_iter().map(|c| {
            let numeric = c.parse::<f64>().is_ok();
            let cell = Cell::new(c);
            if numeric {
                cell.set_alignment(CellAlignment::Right)
            } else {
                cell
            }
        }));
    }
    t.to_string()
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}
