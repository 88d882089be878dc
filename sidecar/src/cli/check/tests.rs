//! The exact `--json` shape of `saltpeter check`.

use chrono::{DateTime, Utc};

use super::{Args, build};
use crate::config;

#[test]
fn json_has_exactly_the_documented_shape() {
    let dir = tempfile::tempdir().expect("dir");
    fs_err::write(
        dir.path().join("ops.yaml"),
        "berlin:\n  min: 30\n  hour: 2\n  dom: '*'\n  mon: '*'\n  dow: '*'\n  timezone: Europe/Berlin\n  command: x\n  targets: y\n\
         never:\n  min: 0\n  hour: 0\n  dom: 30\n  mon: 2\n  dow: '*'\n  command: x\n  targets: y\n\
         bad:\n  min: 0\n  hour: 0\n  dom: '*'\n  mon: '*'\n  dow: 9\n  command: x\n  targets: y\n",
    )
    .expect("write");
    let from =
        DateTime::parse_from_rfc3339("2026-03-28T12:00:00Z").expect("instant").with_timezone(&Utc);
    let loaded = config::load_dir(dir.path(), from).expect("load");
    let args = Args { from: None, next: 2, job: None, json: true };
    let json = serde_json::to_string(&build(&loaded, from, &args)).expect("json");
    let file = dir.path().join("ops.yaml").display().to_string();
    assert_eq!(
        json,
        format!(
            concat!(
                r#"{{"jobs":[{{"name":"berlin","group":"ops","timezone":"Europe/Berlin","next":["2026-03-29T01:00:00Z","2026-03-30T00:30:00Z"],"dispatch":"single","lead_time":0.0}},"#,
                r#"{{"name":"never","group":"ops","timezone":"UTC","next":[],"dispatch":"single","lead_time":0.0}}],"#,
                r#""errors":[{{"file":"{f}","job":"bad","field":"dow","message":"9 is out of range 0-7 (day of the week) (line 23)"}}],"#,
                r#""warnings":[{{"file":"{f}","job":"never","field":null,"message":"never fires after 2026-03-28T12:00:00Z (`0 0 0 30 2 * *`): it is loaded but never scheduled (line 10)"}}]}}"#
            ),
            f = file
        )
    );
}
