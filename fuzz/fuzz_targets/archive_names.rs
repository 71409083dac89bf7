//! Archive entry names and link targets: an accepted entry name or hard
//! link target never leaves the target directory, and a symlink target is
//! kept byte for byte (extraction never follows it, so it needs no more).
#![no_main]
use ferry_core::archive::{entry_name, hard_link_target, symlink_target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    for accepted in [entry_name(raw).ok().flatten(), hard_link_target(raw).ok()]
        .into_iter()
        .flatten()
    {
        let text = accepted.as_str();
        assert!(!text.is_empty() && !text.starts_with('/'));
        assert!(!text.contains('\\') && !text.contains('\0'));
        for segment in accepted.segments() {
            assert!(!segment.is_empty() && segment != "." && segment != "..");
        }
        // What was accepted names the same place when read again.
        assert_eq!(entry_name(text.as_bytes()).ok().flatten().as_ref(), Some(&accepted));
    }
    if let Ok(target) = symlink_target(raw) {
        assert_eq!(target.as_bytes(), raw);
        assert!(!target.is_empty() && !target.contains('\0'));
    }
});
