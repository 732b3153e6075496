# entryPoint: handler.handle, runtime: python3.x — validates a new measurement, summarises it and flags clinical thresholds.
"""Measurement processor.

Input (the task object):
  * created by a `measurement_created` platform event trigger:
      task["data"]["event"]["content"] = {"measurementId", "userId", "type", "values", "unit"}
  * created by hand: the same fields directly in task["data"].

`type` is one of:
  * "heart_rate"      values: [bpm, ...]                                  unit "bpm"
  * "spo2"            values: [percent, ...]                              unit "%"
  * "blood_pressure"  values: {"systolic", "diastolic"} or a list of them unit "mmHg"

Returns {"measurementId", "userId", "type", "summary", "flags", "status"} where status is
"attention" when any flag was raised, "normal" otherwise. Invalid input raises
InvalidMeasurement, so the task fails with error name "InvalidMeasurement".
"""

import logging
import math

logger = logging.getLogger("measurement-processor")

# Plausible physical ranges; values outside are rejected as invalid input.
VALID_RANGES = {
    "heart_rate": (20, 300),
    "spo2": (50, 100),
    "systolic": (50, 300),
    "diastolic": (20, 200),
}
UNITS = {"heart_rate": "bpm", "spo2": "%", "blood_pressure": "mmHg"}

# Clinical thresholds.
TACHYCARDIA_BPM = 100  # resting heart rate above 100 bpm
BRADYCARDIA_BPM = 60  # resting heart rate below 60 bpm
SPO2_LOW = 92  # below 92 % needs attention
SPO2_CRITICAL = 88  # below 88 % is critically low


class InvalidMeasurement(Exception):
    """The measurement cannot be processed (missing fields, wrong type, out-of-range values)."""


def _measurement_from_task(task):
    if not isinstance(task, dict):
        raise InvalidMeasurement("event must be a task object, got %s" % type(task).__name__)
    data = task.get("data") if isinstance(task.get("data"), dict) else task
    event = data.get("event")
    if isinstance(event, dict) and isinstance(event.get("content"), dict):
        logger.info("processing %s event %s", event.get("type", "?"), event.get("id", "?"))
        return event["content"]
    return data


def _number(value, what, kind):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidMeasurement("%s must be a number, got %r" % (what, value))
    low, high = VALID_RANGES[kind]
    if not low <= value <= high:
        raise InvalidMeasurement("%s %r is outside the plausible range %s-%s" % (what, value, low, high))
    return float(value)


def _stats(values):
    return {
        "count": len(values),
        "min": min(values),
        "max": max(values),
        "mean": round(sum(values) / len(values), 1),
    }


def _scalar_values(raw, kind):
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise InvalidMeasurement("values must be a non-empty list of numbers")
    return [_number(v, "value #%d" % (i + 1), kind) for i, v in enumerate(raw)]


def _heart_rate(raw):
    values = _scalar_values(raw, "heart_rate")
    summary = _stats(values)
    flags = []
    if summary["mean"] > TACHYCARDIA_BPM:
        flags.append("tachycardia")
    elif summary["mean"] < BRADYCARDIA_BPM:
        flags.append("bradycardia")
    if summary["max"] > TACHYCARDIA_BPM and "tachycardia" not in flags:
        flags.append("tachycardia_episode")
    return summary, flags


def _spo2(raw):
    values = _scalar_values(raw, "spo2")
    summary = _stats(values)
    flags = []
    if summary["mean"] < SPO2_LOW:
        flags.append("low_spo2")
    if summary["min"] < SPO2_CRITICAL:
        flags.append("critical_spo2")
    return summary, flags


def _bp_category(systolic, diastolic):
    """ACC/AHA 2017 blood pressure categories."""
    if systolic > 180 or diastolic > 120:
        return "hypertensive_crisis"
    if systolic >= 140 or diastolic >= 90:
        return "hypertension_stage_2"
    if systolic >= 130 or diastolic >= 80:
        return "hypertension_stage_1"
    if systolic >= 120:
        return "elevated"
    if systolic < 90 or diastolic < 60:
        return "hypotension"
    return "normal"


def _blood_pressure(raw):
    readings = raw if isinstance(raw, list) else [raw]
    if not readings:
        raise InvalidMeasurement("values must contain at least one reading")
    systolic, diastolic = [], []
    for i, reading in enumerate(readings):
        if not isinstance(reading, dict):
            raise InvalidMeasurement("blood pressure reading #%d must be an object with systolic and diastolic" % (i + 1))
        s = _number(reading.get("systolic"), "systolic #%d" % (i + 1), "systolic")
        d = _number(reading.get("diastolic"), "diastolic #%d" % (i + 1), "diastolic")
        if d >= s:
            raise InvalidMeasurement("reading #%d: diastolic (%g) must be lower than systolic (%g)" % (i + 1, d, s))
        systolic.append(s)
        diastolic.append(d)
    summary = {"systolic": _stats(systolic), "diastolic": _stats(diastolic)}
    category = _bp_category(summary["systolic"]["mean"], summary["diastolic"]["mean"])
    summary["category"] = category
    flags = []
    if category == "elevated":
        flags.append("elevated_blood_pressure")
    elif category != "normal":
        flags.append(category)
    return summary, flags


PROCESSORS = {"heart_rate": _heart_rate, "spo2": _spo2, "blood_pressure": _blood_pressure}


def handle(task, context):
    m = _measurement_from_task(task)
    kind = m.get("type")
    user_id = m.get("userId")
    measurement_id = m.get("measurementId")
    if not user_id or not isinstance(user_id, str):
        raise InvalidMeasurement("userId is required")
    if kind not in PROCESSORS:
        raise InvalidMeasurement("unsupported measurement type %r (expected one of %s)" % (kind, ", ".join(sorted(PROCESSORS))))
    if "values" not in m:
        raise InvalidMeasurement("values are required")
    unit = m.get("unit")
    if unit is not None and unit != UNITS[kind]:
        raise InvalidMeasurement("unit %r is not valid for %s (expected %r)" % (unit, kind, UNITS[kind]))

    logger.info("processing %s measurement %s of user %s", kind, measurement_id, user_id)
    summary, flags = PROCESSORS[kind](m["values"])
    summary["unit"] = UNITS[kind]
    status = "attention" if flags else "normal"
    if flags:
        logger.warning("measurement %s of user %s needs attention: %s", measurement_id, user_id, ", ".join(flags))
    else:
        logger.info("measurement %s of user %s is within normal ranges", measurement_id, user_id)
    return {
        "measurementId": measurement_id,
        "userId": user_id,
        "type": kind,
        "summary": summary,
        "flags": flags,
        "status": status,
    }
