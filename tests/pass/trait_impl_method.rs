//! A method in a trait implementation.

use hyperkit_obs::track_query;

trait Repository {
    fn count(&self, table: &str) -> Result<usize, std::io::Error>;
}

struct Rows(Vec<&'static str>);

impl Repository for Rows {
    #[track_query(operation = "count_rows", db = "memory")]
    fn count(&self, table: &str) -> Result<usize, std::io::Error> {
        if table != "builds" {
            return Err(std::io::Error::other(format!("no table {table}")));
        }
        Ok(self.0.len())
    }
}

fn counter(family: &str, labels: &[(&str, &str)]) -> u64 {
    hyperkit_obs::registry()
        .gather()
        .iter()
        .filter(|f| f.name() == family)
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            let got = m.get_label();
            labels
                .iter()
                .all(|(k, v)| got.iter().any(|l| l.name() == *k && l.value() == *v))
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

fn main() {
    let repo: &dyn Repository = &Rows(vec!["a", "b"]);
    assert_eq!(repo.count("builds").unwrap(), 2);
    assert!(repo.count("users").is_err());

    let queries = |status| {
        counter(
            "hyperkit_db_queries_total",
            &[("operation", "count_rows"), ("status", status)],
        )
    };
    assert_eq!(queries("success"), 1);
    assert_eq!(queries("failure"), 1);
}
