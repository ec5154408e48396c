"""The report's words in Vietnamese (the default: its readers are the province's offices)
and English.

The daemon's reasons are English sentences of a few fixed shapes (``monitor.status.health``);
``reason`` turns those shapes into Vietnamese and leaves free text (a maintenance
window's own reason, usually written in Vietnamese already) as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from monitor.inventory.reports import Lang

WORDS: dict[str, dict[Lang, str]] = {
    "title": {"vi": "Báo cáo nhanh tình trạng sẵn sàng các điểm cầu truyền hình trực tuyến",
              "en": "Readiness report of the video-conference sites"},
    "at": {"vi": "Thời điểm", "en": "At"},
    "period": {"vi": "Giai đoạn thống kê", "en": "Period"},
    "generated": {"vi": "Lập lúc", "en": "Generated"},
    "source_now": {"vi": "trạng thái hiện tại đọc trực tiếp từ phần mềm giám sát vcmon lúc "
                          "lập báo cáo",
                   "en": "the current state, read live from the vcmon monitor when the report "
                         "was made"},
    "source_past": {"vi": "trạng thái tại thời điểm báo cáo theo số liệu Prometheus đã ghi",
                    "en": "the state at the report's moment, as Prometheus recorded it"},
    "data": {"vi": "Dữ liệu", "en": "Data"},
    "demo": {"vi": "DEMO: số liệu mô phỏng từ danh mục mẫu, không phải điểm cầu thật",
             "en": "DEMO: simulated data from the embedded inventory, not real sites"},
    "no_prometheus": {"vi": "chưa chỉ định máy chủ Prometheus (--prometheus) nên báo cáo chỉ "
                            "có trạng thái hiện tại",
                      "en": "no Prometheus given: the report covers the present only"},
    "prometheus_unreadable": {
        "vi": "không đọc được số liệu từ Prometheus ({url}) nên báo cáo chỉ có trạng thái "
              "hiện tại; kiểm tra Prometheus có đang chạy không",
        "en": "could not read Prometheus ({url}): the report covers the present only"},
    "partial": {
        "vi": "Số liệu lịch sử chỉ có từ {start} đến {end}; các tỷ lệ chỉ tính trong khoảng "
              "đó, không nói gì về thời gian trước.",
        "en": "History only covers {start} to {end}; the figures are for that span and say "
              "nothing of the time before."},
    "cut_off": {"vi": "{n} điểm cầu phía sau mất kết nối theo",
                "en": "{n} sites behind it cut off"},
    "root_causes": {"vi": "Nguyên nhân gốc", "en": "Root causes"},
    "degraded_links": {"vi": "Đường truyền suy giảm", "en": "Degraded links"},
    "in_maintenance": {"vi": "Đang bảo trì", "en": "In maintenance"},
    "ready_of": {"vi": "sẵn sàng", "en": "ready"},
    "totals": {"vi": "Tổng hợp", "en": "Totals"},
    "overall": {"vi": "Toàn tỉnh", "en": "All sites"},
    "by_tier": {"vi": "Theo cấp", "en": "By tier"},
    "by_district": {"vi": "Theo đơn vị cấp huyện", "en": "By district"},
    "by_provision": {"vi": "Theo hình thức đảm bảo", "en": "By provision"},
    "group": {"vi": "Nhóm", "en": "Group"},
    "total": {"vi": "Tổng", "en": "Total"},
    "not_ready": {"vi": "Các điểm cầu chưa sẵn sàng", "en": "Sites not ready"},
    "all_ready": {"vi": "Tất cả điểm cầu đều sẵn sàng.", "en": "Every site is ready."},
    "history": {"vi": "Chất lượng đường truyền trong giai đoạn",
                "en": "Link quality over the period"},
    "no_history": {"vi": "Không có số liệu lịch sử", "en": "No history"},
    "history_only_problems": {
        "vi": "Chỉ liệt kê điểm cầu có độ khả dụng dưới 100 % hoặc từng vượt ngưỡng; "
              "các điểm cầu còn lại đạt 100 %.",
        "en": "Only sites below 100 % availability or that crossed a threshold are listed; "
              "every other site was at 100 %."},
    "lowest_ready": {"vi": "Số điểm cầu sẵn sàng thấp nhất", "en": "Fewest sites ready"},
    "district": {"vi": "Đơn vị cấp huyện", "en": "District"},
    "site": {"vi": "Điểm cầu", "en": "Site"},
    "site_id": {"vi": "Mã", "en": "Id"},
    "tier": {"vi": "Cấp", "en": "Tier"},
    "provision": {"vi": "Hình thức", "en": "Provision"},
    "address": {"vi": "Địa chỉ IP", "en": "Address"},
    "contact": {"vi": "Liên hệ", "en": "Contact"},
    "phone": {"vi": "Điện thoại", "en": "Phone"},
    "state": {"vi": "Trạng thái", "en": "State"},
    "since": {"vi": "Từ lúc", "en": "Since"},
    "reason": {"vi": "Nguyên nhân", "en": "Reason"},
    "last": {"vi": "Đo gần nhất", "en": "Last measurements"},
    "loss": {"vi": "Mất gói", "en": "Loss"},
    "rtt": {"vi": "RTT", "en": "RTT"},
    "jitter": {"vi": "Jitter", "en": "Jitter"},
    "mos": {"vi": "MOS", "en": "MOS"},
    # the two directions of a TWAMP stream (docs/twamp.md)
    "forward": {"vi": "chiều đi", "en": "forward"},
    "reverse": {"vi": "chiều về", "en": "reverse"},
    "availability": {"vi": "Khả dụng", "en": "Availability"},
    "not_ready_time": {"vi": "Thời gian chưa sẵn sàng", "en": "Time not ready"},
    "worst_loss": {"vi": "Mất gói cao nhất", "en": "Worst loss"},
    "worst_rtt": {"vi": "RTT cao nhất", "en": "Worst RTT"},
    "worst_jitter": {"vi": "Jitter cao nhất", "en": "Worst jitter"},
    "changes": {"vi": "Số lần đổi trạng thái", "en": "State changes"},
    "definitions": {
        "vi": "Khả dụng = tỷ lệ gói thăm dò được trả lời trong giai đoạn; RTT, jitter, mất "
              "gói: giá trị trung bình trên cửa sổ trượt, lấy mức cao nhất trong giai đoạn.",
        "en": "Availability = share of probes answered in the period; RTT, jitter, loss: the "
              "sliding window's average, the highest seen in the period."},
}

STATUS: dict[str, dict[Lang, str]] = {
    "ok": {"vi": "Sẵn sàng", "en": "Ready"},
    "degraded": {"vi": "Suy giảm", "en": "Degraded"},
    "down": {"vi": "Mất kết nối", "en": "Down"},
    "unreachable": {"vi": "Mất do tuyến trên", "en": "Unreachable"},
    "maintenance": {"vi": "Bảo trì", "en": "Maintenance"},
    "unknown": {"vi": "Chưa rõ", "en": "Unknown"},
}

TIER: dict[str, dict[Lang, str]] = {
    "province": {"vi": "Tỉnh", "en": "Province"},
    "district": {"vi": "Cấp huyện", "en": "District level"},
    "commune": {"vi": "Cấp xã", "en": "Commune level"},
    "unit": {"vi": "Đơn vị, cơ sở", "en": "Units"},
}

PROVISION: dict[str, dict[Lang, str]] = {
    "vnpt": {"vi": "VNPT đảm bảo (hệ thống 3 cấp)", "en": "Telecom (3-tier system)"},
    "contract": {"vi": "Thuê theo hợp đồng", "en": "Contracted"},
}


def words(lang: Lang) -> dict[str, str]:
    return {key: text[lang] for key, text in WORDS.items()}


def status(name: str, lang: Lang) -> str:
    return STATUS.get(name, {}).get(lang, name)


def tier(name: str, lang: Lang) -> str:
    return TIER.get(name, {}).get(lang, name)


def provision(name: str, lang: Lang) -> str:
    return PROVISION.get(name, {}).get(lang, name)


def _translated(pattern: str, vi: Callable[[re.Match[str]], str]) -> tuple[
        re.Pattern[str], Callable[[re.Match[str]], str]]:
    return re.compile(pattern), vi


# The sentences of monitor.status.health and of reports read from Prometheus, whole.
_SENTENCES = [
    _translated(r"no reply to the last (\d+) probes",
                lambda m: f"không trả lời {m[1]} lần thăm dò liên tiếp"),
    _translated(r"no probe has resolved yet", lambda m: "chưa có kết quả thăm dò"),
    _translated(r"in a maintenance window", lambda m: "trong thời gian bảo trì"),
    _translated(r"no data in Prometheus at this time",
                lambda m: "Prometheus không có số liệu tại thời điểm này"),
    _translated(r"thresholds crossed: (.*)", lambda m: f"vượt ngưỡng: {m[1]}"),
    _translated(r"upstream came back; waiting for this site's replies",
                lambda m: "tuyến trên vừa có lại kết nối; đang chờ điểm cầu này trả lời"),
    _translated(r"no reply", lambda m: "không trả lời"),
]
# Degraded reasons list measurements: "jitter 41.2 ms > 30 ms, loss 3.0% > 1.0%".
_PARTS = [(re.compile(r"\bloss\b"), "mất gói"), (re.compile(r"\bjitter\b"), "jitter"),
          (re.compile(r"\bforward\b"), "chiều đi"), (re.compile(r"\breverse\b"), "chiều về"),
          # monitor.status.services.describe_failing: "service sip failed 3 times in a row
          # (timeout)"; the probe's label and its detail are names, kept as they are
          (re.compile(r"(?:(?:^|; )service |; )(\S+) failed (\d+) times in a row"),
           r"; dịch vụ \1 lỗi \2 lần liên tiếp")]


def reason(record: dict[str, Any], lang: Lang, names: dict[str, str]) -> str:
    """A site's reason in ``lang``; ``names`` maps site ids to names (for the upstream)."""
    root = record.get("root_cause")
    if record["status"] == "unreachable" and root:
        name = names.get(root, root)
        return (f"tuyến trên {name} ({root}) mất kết nối" if lang == "vi"
                else f"upstream site {name} ({root}) is down")
    text: str = record.get("reason") or ""
    note = _path_note(record, lang)
    if lang == "en":
        return f"{text}; {note}" if note else text
    for pattern, vi in _SENTENCES:
        match = pattern.fullmatch(text)
        if match:
            text = vi(match)
            break
    else:
        if record["status"] == "degraded":
            for part, vi_word in _PARTS:
                text = part.sub(vi_word, text)
        text = text.removeprefix("; ")
    return f"{text}; {note}" if note else text


def _path_note(record: dict[str, Any], lang: Lang) -> str:
    """Where the path of a degraded or down site breaks, from its last trace (the API
    record's ``path``): the shared cause, else the first bad hop; and a path change."""
    path = record.get("path")
    if record["status"] not in ("degraded", "down") or not path:
        return ""
    if lang == "en":
        return str(record.get("diagnosis") or "")
    parts = []
    cause, bad, changed = path.get("shared_cause"), path.get("first_bad_hop"), path.get("changed")
    if cause:
        parts.append(f"đường truyền tại chặng {cause['address']} ảnh hưởng "
                     f"{len(cause['sites'])} điểm cầu")
    elif bad:
        where = f"{bad['ttl']} ({bad['address']})" if bad["address"] else f"{bad['ttl']}"
        parts.append(f"chặng lỗi đầu tiên: {where}")
    if changed:
        parts.append(f"tuyến đổi tại chặng {changed['ttl']} từ {changed['since'][11:16]}")
    return "; ".join(parts)
