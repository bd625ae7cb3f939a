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

use test_support::metrics::counter_total as counter;

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
