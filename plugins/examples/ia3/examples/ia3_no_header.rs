//! A shared library without the `PEFTSPACE_PLUGIN` symbol: the loader must refuse it as "not a peftspace plugin".

#[no_mangle]
pub extern "C" fn peftspace_unrelated_function() -> i32 {
    42
}
