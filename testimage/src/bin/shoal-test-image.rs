//! `shoal-test-image`: makes sure the Docker engine has the local test image
//! `shoal-test/busybox:latest`, building it from busybox-static if missing (`.ci/run` and the
//! benchmark scripts run it; the tests call the library). Exit 0 when the image is there, 1 with
//! the reason otherwise.

fn main() {
    match shoal_testimage::ensure() {
        Ok(shoal_testimage::Ensured::Present) => println!("{} exists", shoal_testimage::TEST_IMAGE),
        Ok(shoal_testimage::Ensured::Built) => {
            println!("built {} from busybox-static", shoal_testimage::TEST_IMAGE)
        }
        Err(err) => {
            eprintln!("shoal-test-image: {err}");
            std::process::exit(1);
        }
    }
}
