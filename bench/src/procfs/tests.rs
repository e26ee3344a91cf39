use super::*;

#[test]
fn stat_ticks_skip_a_command_name_with_spaces_and_parens() {
    let stat = "4242 (nginx: worker (x)) S 4241 4241 4241 0 -1 4194624 3000 0 0 0 \
                150 75 0 0 20 0 1 0 123456 20000000 800 18446744073709551615";
    assert_eq!(parse_stat_ticks(stat), Some(225));
    assert_eq!(parse_stat_ppid(stat), Some(4241));
}

#[test]
fn stat_of_this_process_parses() {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    assert!(parse_stat_ticks(&stat).is_some());
    assert_eq!(
        parse_stat_ppid(&stat),
        Some(std::os::unix::process::parent_id())
    );
}

#[test]
fn vmrss_is_read_in_kib() {
    let status = "Name:\tnginx\nVmPeak:\t  20000 kB\nVmRSS:\t    5120 kB\nThreads:\t1\n";
    assert_eq!(parse_vmrss_kib(status), Some(5120));
    assert_eq!(parse_vmrss_kib("Name:\tkthreadd\n"), None);
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(parse_vmrss_kib(&own).unwrap() > 0);
}

#[test]
fn descendants_follow_the_parent_chain() {
    let parents = [(2, 1), (3, 2), (4, 2), (5, 9), (6, 4)];
    let mut d = descendants(2, &parents);
    d.sort_unstable();
    assert_eq!(d, vec![2, 3, 4, 6]);
}

#[test]
fn tree_of_this_process_includes_itself() {
    let me = std::process::id();
    assert!(tree(me).contains(&me));
    assert!(alive(me));
    assert!(cpu_ticks(me) < u64::MAX);
    assert!(rss_kib(me) > 0);
}

#[test]
fn any_status_field_is_read_in_kib() {
    let status = "VmHWM:\t  20480 kB\nVmRSS:\t    5120 kB\n";
    assert_eq!(parse_status_kib(status, "VmHWM:"), Some(20480));
    assert_eq!(parse_status_kib(status, "VmSwap:"), None);
}
