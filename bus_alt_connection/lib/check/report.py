"""The check's report: what each step found, the verdict, the exit code."""

import dataclasses
import json
import sys

ADDON = "bus_alt_connection"
#: the exit codes: the bus will work; a misconfiguration; a server unreachable
OK, MISCONFIGURED, UNREACHABLE = 0, 1, 2


@dataclasses.dataclass
class Report:
    exit_code: int = OK
    verdict: str = ""
    advice: str = ""
    route: dict | None = None
    db_host: dict | None = None
    round_trip: dict | None = None
    server_wide: dict | None = None
    mode: dict | None = None  #: configured mode and source, active mode and why
    poll: dict | None = None  #: poll mode: db_host, what a poll found in each database
    cron: dict | None = None  #: the cron runners' trigger LISTEN (cron_db_*)
    #: what else can cut the listener or keep it deaf (hazards)
    findings: list = dataclasses.field(default_factory=list)

    def conclude(self, exit_code, verdict, advice=""):
        self.exit_code, self.verdict, self.advice = exit_code, verdict, advice
        return self


def format_report(report):
    lines = ["bus_alt_connection check", ""]
    if mode := report.mode:
        lines.append(
            f"imdispatcher_mode: {mode['configured']} ({mode['source']}); "
            f"active: {mode.get('active') or '-'}"
            + (f", {mode['why']}" if mode.get("why") else "")
        )
    if report.route:
        lines.append("listener route (imdispatcher_db_*):")
        for name, item in report.route.items():
            value = "-" if item["value"] is None else item["value"]
            lines.append(f"  {name:<22} {value!s:<24} {item['source']}")
    if report.db_host:
        kind = (
            "a transaction-mode pooler: LISTEN through it hears nothing"
            if report.db_host["pooler"]
            else "LISTEN works through it"
        )
        lines.append(f"db_host {report.db_host['route']}: {kind}")
    if trip := report.round_trip:
        heard = (
            f"received in {trip['ms']} ms" if trip["received"] else "NOTHING received"
        )
        role = "standby" if trip["standby"] else "primary"
        lines.append(
            f"LISTEN on the route, NOTIFY through db_host: {heard}; "
            f"PostgreSQL {trip['server_version']}, {role}"
        )
    if report.poll:
        lines.append(
            f"polling through db_host {report.poll['route']} every "
            f"{report.poll['interval_ms']} ms:"
        )
        for name, result in report.poll["databases"].items():
            outcome = ("OK" if result["ok"] else f"FAILS: {result['error']}") + (
                f", last id {result['last_id']}" if result.get("last_id") else ""
            )
            lines.append(f"  {name:<22} {outcome}")
    if cron := report.cron:
        line = f"cron triggers: {cron['state']}"
        if cron.get("route"):
            line += f", {cron['route']}"
        if "received" in cron:
            line += (
                f"; NOTIFY through db_host received in {cron['ms']} ms"
                if cron["received"]
                else "; NOTHING received"
            )
        lines.append(line)
    if report.findings:
        lines.append("further checks:")
        for finding in report.findings:
            mark = "ok " if finding["exit_code"] == OK else "!! "
            lines.append(f"  {mark}{finding['detail']}")
            if finding["advice"]:
                lines.append(f"      what to do: {finding['advice']}")
    if report.server_wide:
        state = "loaded" if report.server_wide["loaded"] else "NOT loaded"
        lines.append(
            f"server_wide_modules: {','.join(report.server_wide['modules'])} "
            f"({ADDON} {state})"
        )
    label = {OK: "OK", MISCONFIGURED: "MISCONFIGURED", UNREACHABLE: "UNREACHABLE"}
    lines += ["", f"verdict: {label[report.exit_code]}: {report.verdict}"]
    if report.advice:
        lines.append(f"what to do: {report.advice}")
    return "\n".join(lines)


def emit(report, as_json, out=None):
    out = out or sys.stdout
    if as_json:
        out.write(json.dumps(dataclasses.asdict(report), indent=2) + "\n")
    else:
        out.write(format_report(report) + "\n")
    return report.exit_code
