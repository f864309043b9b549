//! A `WHERE` clause built from a list's optional filters. Only the filters a request uses
//! appear in the statement, so each combination gets a plan that can use its index (a
//! catch-all `($2 IS NULL OR ...)` cannot).

use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::extract::PageRequest;

type Param = Box<dyn ToSql + Sync + Send>;

/// Conditions joined by `AND`, with their parameters; the first is always the tenant.
pub struct Where {
    clauses: Vec<String>,
    params: Vec<Param>,
}

impl Where {
    /// Starts with `{tenant_column} = $1`: every statement filters the tenant explicitly.
    pub fn tenant(tenant_column: &str, tenant_id: Uuid) -> Self {
        let mut w = Self {
            clauses: Vec::new(),
            params: Vec::new(),
        };
        w.push(&format!("{tenant_column} = {{}}"), tenant_id);
        w
    }

    /// Adds a parameter; returns its placeholder (`$n`).
    pub fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    /// Adds a condition whose `{}` is replaced by the placeholder of `value`.
    pub fn push(&mut self, clause: &str, value: impl ToSql + Sync + Send + 'static) {
        let placeholder = self.bind(value);
        self.clauses.push(clause.replace("{}", &placeholder));
    }

    /// Adds a condition whose placeholders the caller made with [`Where::bind`].
    pub fn condition(&mut self, sql: String) {
        self.clauses.push(sql);
    }

    /// A text search for `q` over a table's trigram terms (see [`Search`]): candidates found
    /// by equality on the terms' primary key (an index lookup, usable under row-level
    /// security), then rechecked with `ILIKE`. A query without a trigram (shorter than three
    /// characters) only rechecks, scanning the tenant's rows.
    pub fn search(&mut self, search: &Search, q: &str) {
        if has_trigram(q) {
            let text = self.bind(q.to_string());
            let Search {
                id, terms, term_id, ..
            } = search;
            self.condition(format!(
                "{id} IN (SELECT t.{term_id} FROM {terms} t
                          WHERE t.tenant_id = $1
                            AND t.trigram = ANY(product_search_trigrams({text}))
                          GROUP BY t.{term_id}
                          HAVING count(*) = cardinality(product_search_trigrams({text})))"
            ));
        }
        self.push(&format!("{} ILIKE {{}}", search.text), contains_pattern(q));
    }

    pub fn push_opt<T: ToSql + Sync + Send + 'static>(&mut self, clause: &str, value: Option<T>) {
        if let Some(value) = value {
            self.push(clause, value);
        }
    }

    /// The keyset condition `{id_column} < cursor` and `LIMIT limit + 1` of a page, newest
    /// first; returns the `ORDER BY ... LIMIT ...` tail.
    pub fn page(&mut self, id_column: &str, page: PageRequest) -> String {
        self.push_opt(&format!("{id_column} < {{}}"), page.after);
        let limit = self.bind(page.limit + 1);
        format!("ORDER BY {id_column} DESC LIMIT {limit}")
    }

    pub fn sql(&self) -> String {
        self.clauses.join(" AND ")
    }

    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// Where a list's text search looks: the row id, the trigram table kept by a trigger (its id
/// column), and the searchable text (as the trigger computes it).
pub struct Search {
    pub id: &'static str,
    pub terms: &'static str,
    pub term_id: &'static str,
    pub text: &'static str,
}

/// Whether `q` has a trigram (as `product_search_trigrams` makes them: a word of three or more
/// characters between ASCII characters other than letters and digits).
fn has_trigram(q: &str) -> bool {
    q.split(|c: char| c.is_ascii() && !c.is_ascii_alphanumeric())
        .any(|word| word.chars().count() >= 3)
}

/// A `LIKE`/`ILIKE` pattern matching `text` anywhere, its wildcards escaped.
pub fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// A full statement with its parameters.
pub struct Statement {
    pub sql: String,
    pub filter: Where,
}

impl Statement {
    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.filter.params()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigrams_need_a_word_of_three_characters() {
        assert!(has_trigram("ipê print"));
        assert!(has_trigram("x-ipê"));
        assert!(!has_trigram("ab cd"));
        assert!(!has_trigram("a-b_c%d"));
        assert!(!has_trigram("ê!"));
    }

    #[test]
    fn placeholders_follow_the_parameters() {
        let mut w = Where::tenant("p.tenant_id", Uuid::nil());
        w.push_opt::<i64>("p.price_cents >= {}", None);
        w.push("p.status = {}", "active");
        let tail = w.page(
            "p.id",
            PageRequest {
                limit: 20,
                after: None,
            },
        );
        assert_eq!(w.sql(), "p.tenant_id = $1 AND p.status = $2");
        assert_eq!(tail, "ORDER BY p.id DESC LIMIT $3");
        assert_eq!(w.params().len(), 3);
    }

    #[test]
    fn patterns_escape_wildcards() {
        assert_eq!(contains_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
