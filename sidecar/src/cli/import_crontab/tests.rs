//! Converting crontabs: macros, env, the user column, `%`, and dom+dow split into two jobs.

use super::convert;

#[test]
fn a_system_crontab_converts_to_jobs_that_mean_the_same() {
    let crontab = "\
SHELL=/bin/bash
MAILTO=\"ops@example.com\"
# m h dom mon dow user command
*/5 * * * * root /usr/bin/check --fast
@daily backup /usr/local/bin/backup
0 4 1 * mon root /usr/bin/report
30 2 * * * root mail -s hi ops%line one%line \\% two
@reboot root /usr/bin/start
";
    let (jobs, problems) = convert(crontab, true, "sys", "web*", "glob");
    assert_eq!(
        problems,
        ["line 8: @reboot has no equivalent in a cron scheduler: @reboot root /usr/bin/start"]
    );
    let yaml = serde_yaml::to_string(&jobs).expect("yaml");
    let env = "  env:\n    SHELL: /bin/bash\n    MAILTO: ops@example.com\n";
    let job = |name: &str, f: [&str; 5], user: &str, cmd: &str, line: &str| {
        format!(
            "{name}:\n  sec: 0\n  min: {}\n  hour: {}\n  dom: {}\n  mon: {}\n  dow: {}\n  command: {cmd}\n  targets: web*\n  target_type: glob\n  user: {user}\n{env}  description: '{line}'\n",
            f[0], f[1], f[2], f[3], f[4]
        )
    };
    let expected = [
        job("sys_4", ["'*/5'", "'*'", "'*'", "'*'", "'*'"], "root", "/usr/bin/check --fast", "imported from crontab line 4: */5 * * * * root /usr/bin/check --fast"),
        job("sys_5", ["'0'", "'0'", "'*'", "'*'", "'*'"], "backup", "/usr/local/bin/backup", "imported from crontab line 5: @daily backup /usr/local/bin/backup"),
        job("sys_6_dom", ["'0'", "'4'", "'1'", "'*'", "'*'"], "root", "/usr/bin/report", "imported from crontab line 6: 0 4 1 * mon root /usr/bin/report"),
        job("sys_6_dow", ["'0'", "'4'", "2-31", "'*'", "mon"], "root", "/usr/bin/report", "imported from crontab line 6: 0 4 1 * mon root /usr/bin/report"),
        job("sys_7", ["'30'", "'2'", "'*'", "'*'", "'*'"], "root", "|-\n    mail -s hi ops <<'SALTPETER_STDIN'\n    line one\n    line % two\n    SALTPETER_STDIN", "imported from crontab line 7: 30 2 * * * root mail -s hi ops%line one%line \\% two"),
    ]
    .concat();
    assert_eq!(yaml, expected);
}

#[test]
fn the_dow_half_takes_the_other_days_of_the_month() {
    assert_eq!(super::complement_days("13").as_deref(), Some("1-12,14-31"));
    assert_eq!(super::complement_days("1,15").as_deref(), Some("2-14,16-31"));
    assert_eq!(
        super::complement_days("*/2").as_deref(),
        Some("2,4,6,8,10,12,14,16,18,20,22,24,26,28,30")
    );
    assert_eq!(super::complement_days("1-31"), None);
    assert_eq!(super::complement_days("L"), None);
}
