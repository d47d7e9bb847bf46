//! The process's open-file limit, which bounds connections: past it `accept` fails and
//! the process can open neither client nor database nor upstream connections.

/// Raises the soft open-file limit to the hard one (as the Go runtime does at start: the
/// common soft default of 1024 is a relic of `select(2)`, which nothing here uses) and
/// returns the limit now in force; `None` where it cannot be read.
#[cfg(unix)]
pub fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given. It fails (and changes
        // nothing) where the hard limit is above what the kernel allows, e.g. unlimited.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Some(as_u64(raised.rlim_cur));
        }
    }
    Some(as_u64(limit.rlim_cur))
}

#[cfg(not(unix))]
pub fn raise_open_file_limit() -> Option<u64> {
    None
}

/// `rlim_t` is `u64` on Linux and other widths elsewhere.
#[cfg(unix)]
fn as_u64<T: TryInto<u64>>(value: T) -> u64 {
    value.try_into().unwrap_or(u64::MAX)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// Soft and hard "Max open files" of this process, as the kernel reports them.
    fn proc_limits() -> (String, String) {
        let text = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
        let line = text
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("a Max open files line");
        let mut fields = line["Max open files".len()..].split_whitespace();
        let soft = fields.next().expect("soft").to_owned();
        let hard = fields.next().expect("hard").to_owned();
        (soft, hard)
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let limit = super::raise_open_file_limit().expect("readable on Linux");
        let (soft, hard) = proc_limits();
        assert_eq!(soft, limit.to_string(), "the returned limit is the one in force");
        if hard != "unlimited" {
            assert_eq!(soft, hard);
        }
    }
}
