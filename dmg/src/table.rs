//! Text tables in DAOS's layout (its txtfmt package): titles, a dashed rule
//! under each title, cells left-aligned and separated by at least one space.
//! Lines carry no trailing spaces.

/// A table with titled columns; rows shorter than the titles are padded.
pub struct Table {
    titles: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: AsRef<str>>(titles: &[S]) -> Self {
        Table {
            titles: titles.iter().map(|t| t.as_ref().to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Renders the table, every line ending in a newline.
    pub fn render(&self) -> String {
        self.render_indented("")
    }

    /// Renders the table with `indent` before every line.
    pub fn render_indented(&self, indent: &str) -> String {
        let cols = self.titles.len();
        let rules: Vec<String> = self
            .titles
            .iter()
            .map(|t| "-".repeat(t.chars().count()))
            .collect();
        let mut widths: Vec<usize> = self.titles.iter().map(|t| t.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let lines = [&self.titles, &rules].into_iter().chain(&self.rows);
        for line in lines {
            let mut text = String::from(indent);
            for (i, w) in widths.iter().enumerate().take(cols) {
                let cell = line.get(i).map(String::as_str).unwrap_or("");
                text.push_str(cell);
                text.push_str(&" ".repeat(w - cell.chars().count() + 1));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Renders one entity's attributes as DAOS does: a title, a rule as long as the
/// title, then `  key : value` lines with the keys padded to the longest.
pub fn entity(title: &str, attrs: &[(String, String)]) -> String {
    let width = attrs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = format!("{title}\n{}\n", "-".repeat(title.chars().count()));
    for (k, v) in attrs {
        let pad = " ".repeat(width - k.chars().count());
        out.push_str(format!("  {k}{pad}: {v}").trim_end());
        out.push('\n');
    }
    out
}

/// Groups rows whose cells other than the first are equal, joining their first
/// cells with commas, in first-seen order (DAOS prints host sets this way).
pub fn group_rows(rows: Vec<(String, Vec<String>)>) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    for (key, cells) in rows {
        match groups.iter_mut().find(|(_, c)| *c == cells) {
            Some((keys, _)) => keys.push(key),
            None => groups.push((vec![key], cells)),
        }
    }
    groups
        .into_iter()
        .map(|(keys, cells)| (keys.join(","), cells))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_pad_to_the_widest_cell() {
        let mut t = Table::new(&["Rank", "State"]);
        t.row(vec!["[0-1]".into(), "Joined".into()]);
        t.row(vec!["2".into()]);
        assert_eq!(t.render(), "Rank  State\n----  -----\n[0-1] Joined\n2\n");
        assert_eq!(
            t.render_indented("  ").lines().next(),
            Some("  Rank  State")
        );
    }

    #[test]
    fn entity_aligns_keys() {
        let out = entity(
            "Title",
            &[("A".into(), "1".into()), ("Longer".into(), "2".into())],
        );
        assert_eq!(out, "Title\n-----\n  A     : 1\n  Longer: 2\n");
    }

    #[test]
    fn groups_equal_rows() {
        let rows = vec![
            ("a".to_string(), vec!["1".to_string()]),
            ("b".to_string(), vec!["2".to_string()]),
            ("c".to_string(), vec!["1".to_string()]),
        ];
        let g = group_rows(rows);
        assert_eq!(g[0], ("a,c".to_string(), vec!["1".to_string()]));
        assert_eq!(g[1].0, "b");
    }
}
