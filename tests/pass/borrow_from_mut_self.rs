//! A method returning a reference borrowed from `&mut self` keeps its
//! lifetime: the caller can write through it.

use hyperkit_obs::track_query;

struct Cache {
    hits: u32,
    entries: Vec<String>,
}

impl Cache {
    #[track_query(operation = "get_hits")]
    fn get(&mut self) -> &mut u32 {
        &mut self.hits
    }

    #[track_query(operation = "first_entry")]
    fn first<'a>(&'a mut self, default: &'a str) -> Result<&'a str, String> {
        match self.entries.first() {
            Some(e) => Ok(e.as_str()),
            None => Ok(default),
        }
    }
}

use test_support::metrics::counter_total as counter;

fn main() {
    let mut cache = Cache {
        hits: 0,
        entries: Vec::new(),
    };
    *cache.get() += 2;
    *cache.get() += 3;
    assert_eq!(cache.hits, 5);
    assert_eq!(cache.first("none"), Ok("none"));

    let queries = |op| {
        counter(
            "hyperkit_db_queries_total",
            &[("operation", op), ("status", "success")],
        )
    };
    assert_eq!(queries("get_hits"), 2);
    assert_eq!(queries("first_entry"), 1);
}
