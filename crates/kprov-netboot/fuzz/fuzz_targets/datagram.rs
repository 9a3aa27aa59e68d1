#![no_main]
//! Fuzzes the DHCP and TFTP datagram paths.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kprov_netboot::fuzz::fuzz_one(data);
});
