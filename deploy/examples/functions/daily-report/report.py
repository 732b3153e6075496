# entryPoint: report.build, runtime: python3.x — aggregates a daily report from a list of measurement records.
"""Daily report.

task["data"]["measurements"]: list of measurement records, as handled by the
measurement-processor example: {"measurementId", "userId", "type", "values", "unit",
optionally "timestamp" (ISO 8601 or epoch ms), and optionally the processor's output
fields "flags"/"status"}.
task["data"]["date"]: optional "YYYY-MM-DD" (default: yesterday, UTC). Records that
carry a timestamp on another day are skipped; records without a timestamp are counted.

Returns {"date", "totalMeasurements", "countsByType", "users": {userId: {type: averages}},
"flagged", "flaggedUsers", "skipped"}.
"""

import datetime
import logging

logger = logging.getLogger("daily-report")


def _flags_of(record):
    """The processor's flags when present, else a quick threshold check."""
    if isinstance(record.get("flags"), list):
        return record["flags"]
    if record.get("status") == "attention":
        return ["attention"]
    kind, values = record.get("type"), record.get("values")
    if kind == "blood_pressure":
        readings = values if isinstance(values, list) else [values]
        if any(r.get("systolic", 0) >= 130 or r.get("diastolic", 0) >= 80 for r in readings if isinstance(r, dict)):
            return ["hypertension"]
        return []
    nums = _numbers(values)
    if not nums:
        return []
    mean = sum(nums) / len(nums)
    if kind == "heart_rate" and (mean > 100 or mean < 60):
        return ["abnormal_heart_rate"]
    if kind == "spo2" and mean < 92:
        return ["low_spo2"]
    return []


def _numbers(values):
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, list):
        return []
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _record_date(record):
    ts = record.get("timestamp", record.get("creationTimestamp"))
    if ts is None:
        return None
    if isinstance(ts, (int, float)):
        return datetime.datetime.fromtimestamp(ts / 1000, tz=datetime.timezone.utc).date()
    return datetime.datetime.fromisoformat(str(ts).replace("Z", "+00:00")).astimezone(datetime.timezone.utc).date()


def _report_date(data):
    if data.get("date"):
        return datetime.date.fromisoformat(data["date"])
    return datetime.datetime.now(datetime.timezone.utc).date() - datetime.timedelta(days=1)


def build(task, context):
    data = (task or {}).get("data") or {}
    day = _report_date(data)
    records = data.get("measurements") or []

    counts = {}
    sums = {}  # userId -> type -> field -> [sum, n]
    flagged = 0
    flagged_users = set()
    skipped = 0
    for record in records:
        if not isinstance(record, dict) or not record.get("userId") or not record.get("type"):
            skipped += 1
            continue
        try:
            record_day = _record_date(record)
        except (ValueError, TypeError, OverflowError):
            skipped += 1
            continue
        if record_day is not None and record_day != day:
            skipped += 1
            continue

        user, kind = record["userId"], record["type"]
        counts[kind] = counts.get(kind, 0) + 1
        fields = sums.setdefault(user, {}).setdefault(kind, {})
        values = record.get("values")
        if kind == "blood_pressure":
            for reading in values if isinstance(values, list) else [values]:
                if isinstance(reading, dict):
                    for key in ("systolic", "diastolic"):
                        if isinstance(reading.get(key), (int, float)):
                            acc = fields.setdefault(key, [0.0, 0])
                            acc[0] += reading[key]
                            acc[1] += 1
        else:
            for v in _numbers(values):
                acc = fields.setdefault("value", [0.0, 0])
                acc[0] += v
                acc[1] += 1
        if _flags_of(record):
            flagged += 1
            flagged_users.add(user)

    users = {}
    for user, kinds in sorted(sums.items()):
        users[user] = {}
        for kind, fields in sorted(kinds.items()):
            averages = {key: round(total / n, 1) for key, (total, n) in fields.items() if n}
            if list(averages) == ["value"]:
                averages = {"average": averages["value"]}
            users[user][kind] = averages

    report = {
        "date": day.isoformat(),
        "totalMeasurements": sum(counts.values()),
        "countsByType": dict(sorted(counts.items())),
        "users": users,
        "flagged": flagged,
        "flaggedUsers": sorted(flagged_users),
        "skipped": skipped,
    }
    logger.info("daily report %s: %d measurements from %d users, %d flagged, %d skipped",
                report["date"], report["totalMeasurements"], len(users), flagged, skipped)
    return report
