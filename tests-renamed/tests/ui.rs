//! The macros with `crate = obs` compile and run in a crate that has
//! hyperkit-obs only as `obs`.

#[test]
fn renamed_dependency() {
    trybuild::TestCases::new().pass("pass/*.rs");
}
