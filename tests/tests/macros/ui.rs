//! Compile-time behaviour of the macros: every supported function shape
//! compiles and runs (`pass/`), and every misuse fails with one error at the
//! token at fault (`fail/`, expected output in the `.stderr` beside each case).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("pass/*.rs");
    t.compile_fail("fail/*.rs");
}
