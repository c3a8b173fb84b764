"""OASIS Common Alerting Protocol 1.2 rendering of an alert event (the webhook's alternative body, format=cap)."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from typing import Any

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
CONTENT_TYPE = "application/cap+xml"

MSG_TYPE = {"raised": "Alert", "updated": "Update", "escalated": "Update", "cleared": "Cancel"}
SEVERITY = {"critical": "Severe", "warning": "Moderate", "info": "Minor"}
EVENT_TITLE = {
    "signal_blocking": "Smart water meter signal blocked (suspected tampering)",
    "network_outage": "Water meter network cell outage",
    "battery_depleted": "Water meter battery depleted",
    "reverse_flow": "Water meter reverse flow (suspected reversal or rollback)",
    "bypass": "Suspected bypass pipe around a water meter",
    "disinfection_overdue": "Water storage tank disinfection overdue",
    "disinfection_due_soon": "Water storage tank disinfection due soon",
    "water_quality": "Storage tank water out of drinking-water limits (GB 5749-2022)",
    "pump_room_intrusion": "Pump room door opened without a work order (suspected intrusion)",
    "sensor_fault": "Storage tank water sensor stuck or reading the impossible",
}
INSTRUCTION = {
    "signal_blocking": "Send a crew to inspect the meter and its antenna for shielding or damage (Art. 43); "
                       "record the register reading.",
    "network_outage": "Contact the network operator about the cell; no site visit to the meters is needed.",
    "battery_depleted": "Schedule a battery or meter replacement.",
    "reverse_flow": "Send a crew to check the meter's orientation and register for reversal or rollback (Art. 43).",
    "bypass": "Send a crew to inspect the supply pipe around the meter for a bypass (Art. 43).",
    "disinfection_overdue": "Clean and disinfect the tank, test the water and post the result (Art. 31).",
    "disinfection_due_soon": "Plan the tank's cleaning and disinfection before the due date (Art. 31).",
    "water_quality": "Test the tank's water on site, restrict supply from it if the test confirms, find the cause "
                     "(dosing, inlet, tank lining) and flush; post the result in the building (Art. 31).",
    "pump_room_intrusion": "Send someone to the pump room now: check the door, the tanks and the dosing, and report "
                           "whether anyone was authorised to be there.",
    "sensor_fault": "Clean and recalibrate or replace the tank's sensor; test the water by hand until it is fixed.",
}
HEALTH_KINDS = ("disinfection_overdue", "disinfection_due_soon", "water_quality")
CATEGORY = {"pump_room_intrusion": "Security"}  # CAP 1.2 categories other than Health / Infra
# CAP identifiers must not contain spaces, commas or the restricted characters < and &.
_BAD_ID = str.maketrans({" ": "_", ",": "_", "<": "_", "&": "_"})


def cap_time(t: dt.datetime) -> str:
    """CAP dateTime: seconds, an explicit numeric offset ('Z' is not allowed by CAP 1.2)."""
    return t.replace(microsecond=0).isoformat()


def identifier(sender: str, alert_id: str, sequence: int) -> str:
    return f"{sender}.{alert_id}.{sequence}".translate(_BAD_ID)


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    e = ET.SubElement(parent, f"{{{CAP_NS}}}{tag}")
    if text is not None:
        e.text = text
    return e


def _iso_to_cap(iso: str, zone: dt.tzinfo) -> str:
    t = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return cap_time(t.astimezone(zone))


def _describe(alert: dict[str, Any]) -> str:
    """Plain-text description: where, since when, and the evidence a crew reads on a phone."""
    ev = alert.get("evidence", {})
    where = ev.get("where", {})
    lines = [alert.get("summary", "")]
    if where.get("address"):
        lines.append(f"Address: {where['address']} (district {where.get('district', alert.get('district'))})")
    if ev.get("began_local"):
        lines.append(f"Began: {ev['began_local']}")
    loss = ev.get("loss_estimate") or {}
    tel, stat = loss.get("telemetry"), loss.get("statutory")
    if tel:
        lines.append(f"Loss (telemetry): {tel['m3']} m3 - {tel['basis']}")
    if stat and "m3" in stat:
        lines.append(f"Loss (Art. 43 statutory): {stat['m3']} m3 - {stat['basis']}")
    elif stat and "m3_range" in stat:
        lines.append(f"Loss (Art. 43 statutory): {stat['m3_range'][0]}-{stat['m3_range'][1]} m3 - {stat['basis']}")
    for k, v in ev.items():
        if k in ("where", "loss_estimate", "began_local") or isinstance(v, (dict, list)):
            continue
        lines.append(f"{k}: {v}")
    return "\n".join(x for x in lines if x)


def render(alert: dict[str, Any], *, sequence: int, sender: str, sent: dt.datetime, references: str | None,
           language: str = "en-US", scope: str = "Restricted", restriction: str = "water utility dispatch",
           zone: dt.tzinfo = dt.UTC) -> tuple[bytes, str]:
    """The CAP <alert> for one alert event dict (docs/FORMATS.md shape); returns (XML bytes, CAP identifier)."""
    ET.register_namespace("", CAP_NS)
    kind, event = alert["kind"], alert["event"]
    ident = identifier(sender, alert["alert_id"], sequence)
    root = ET.Element(f"{{{CAP_NS}}}alert")
    _sub(root, "identifier", ident)
    _sub(root, "sender", sender)
    _sub(root, "sent", cap_time(sent.astimezone(zone)))
    _sub(root, "status", "Actual")
    _sub(root, "msgType", MSG_TYPE.get(event, "Update"))
    _sub(root, "source", "cistern")
    _sub(root, "scope", scope)
    if scope == "Restricted":
        _sub(root, "restriction", restriction)
    elif scope == "Private":
        _sub(root, "addresses", alert.get("route", {}).get("unit", "").replace(" ", "_") or "dispatch")
    if event == "cleared":
        _sub(root, "note", "The condition has ended: " + alert.get("summary", ""))
    elif event == "escalated":
        _sub(root, "note", f"Escalated to {alert.get('route', {}).get('unit', '')}")
    if references and event != "raised":
        _sub(root, "references", references)
    _sub(root, "incidents", alert["alert_id"].translate(_BAD_ID))

    info = _sub(root, "info")
    _sub(info, "language", language)
    _sub(info, "category", CATEGORY.get(kind, "Health" if kind in HEALTH_KINDS else "Infra"))
    _sub(info, "event", EVENT_TITLE.get(kind, kind.replace("_", " ")))
    if event == "cleared":
        _sub(info, "responseType", "AllClear")
    elif kind == "disinfection_due_soon":
        _sub(info, "responseType", "Prepare")
    else:
        _sub(info, "responseType", "Execute")
    severity = alert.get("severity", "")
    if event == "cleared":
        urgency = "Past"
    elif kind == "disinfection_due_soon":
        urgency = "Future"
    elif severity == "critical":
        urgency = "Immediate"
    else:
        urgency = "Expected"
    _sub(info, "urgency", urgency)
    _sub(info, "severity", SEVERITY.get(severity, "Unknown"))
    # Tank schedules come from records (observed); telemetry incidents are inferences (likely).
    _sub(info, "certainty", "Observed" if kind in HEALTH_KINDS else "Likely")
    code = _sub(info, "eventCode")
    _sub(code, "valueName", "cistern-kind")
    _sub(code, "value", kind)
    _sub(info, "effective", _iso_to_cap(alert["detected_at"], zone))
    _sub(info, "onset", _iso_to_cap(alert["start"], zone))
    _sub(info, "senderName", "Cistern water network monitoring")
    _sub(info, "headline", alert.get("summary", "")[:160])
    _sub(info, "description", _describe(alert))
    _sub(info, "instruction", INSTRUCTION.get(kind, "Investigate."))
    unit = alert.get("route", {}).get("unit")
    if unit:
        _sub(info, "contact", unit)
    params: list[tuple[str, Any]] = [
        ("alert_id", alert["alert_id"]), ("event", event), ("sequence", sequence),
        ("subject_type", alert["subject"]["type"]), ("subject_id", alert["subject"]["id"]),
        ("route_unit", unit or ""),
    ]
    loss = alert.get("evidence", {}).get("loss_estimate") or {}
    if loss.get("telemetry"):
        params.append(("loss_telemetry_m3", loss["telemetry"]["m3"]))
    stat = loss.get("statutory") or {}
    if "m3" in stat:
        params.append(("loss_statutory_m3", stat["m3"]))
    elif "m3_range" in stat:
        params.append(("loss_statutory_m3_range", f"{stat['m3_range'][0]}-{stat['m3_range'][1]}"))
    for name, value in params:
        p = _sub(info, "parameter")
        _sub(p, "valueName", name)
        _sub(p, "value", str(value))
    area = _sub(info, "area")
    where = alert.get("evidence", {}).get("where", {})
    district = where.get("district") or alert.get("district", "")
    desc = where.get("address") or f"{alert['subject']['type']} {alert['subject']['id']}"
    _sub(area, "areaDesc", f"{desc}, district {district}" if district else desc)
    geo = _sub(area, "geocode")
    _sub(geo, "valueName", "district")
    _sub(geo, "value", district)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True), ident
