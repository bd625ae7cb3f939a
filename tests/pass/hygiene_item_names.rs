//! A local binding and a module item named like the wrapper's generated items
//! (`__HK_SITE`, `__hk_log`) stay the user's.

#![allow(non_snake_case, non_upper_case_globals)]

use hyperkit_obs::track_build;

static __hk_log: &str = "the user's static";

#[track_build(chain)]
fn build(chain: &str) -> String {
    let __HK_SITE = 3;
    format!("{__hk_log} {__HK_SITE}")
}

fn main() {
    assert_eq!(build("linea"), "the user's static 3");
}
