//! Tables and positions as the commands print them.

use logpipe_core::Position;

/// A position, or `-` for none.
pub(super) fn show(position: Option<&Position>) -> String {
    position.map_or_else(|| "-".to_owned(), ToString::to_string)
}

/// Prints `rows` (the first is the header) in columns two spaces apart.
pub(super) fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        println!("{}", line.trim_end());
    }
}
