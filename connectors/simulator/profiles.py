"""The two simulated HIS vendor profiles: their tables, local codes and catalogues.

The workload generator works on vendor-neutral entities (a patient, a registration, …); a
profile says which table and columns hold each entity and how neutral codes become the vendor's
local codes. The mappings in ``streams/mappings`` translate those local codes back to national
ones, exactly as they would for a real vendor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

SQL_DIR = Path(__file__).resolve().parent / "sql"

# A column's source: an entity attribute, an attribute through a code map, or a function.
ColumnSource = str | tuple[str, dict[str, str]] | Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class TableSpec:
    """Where one entity kind lives in a vendor's schema."""

    table: str
    key: tuple[str, ...]
    columns: dict[str, ColumnSource]

    def render(self, entity: dict[str, Any], only: set[str] | None = None) -> dict[str, Any]:
        """Row values of ``entity``; with ``only``, just the columns fed by those attributes."""
        row: dict[str, Any] = {}
        for col, src in self.columns.items():
            if isinstance(src, str):
                if only is not None and src not in only:
                    continue
                row[col] = entity.get(src)
            elif isinstance(src, tuple):
                attr, codes = src
                if only is not None and attr not in only:
                    continue
                value = entity.get(attr)
                row[col] = None if value is None else codes[value]
            else:
                if only is not None and not (getattr(src, "attrs", set()) & only):
                    continue
                row[col] = src(entity)
        return row

    def key_of(self, entity: dict[str, Any]) -> dict[str, Any]:
        full = self.render(entity)
        return {k: full[k] for k in self.key}


def uses(*attrs: str) -> Callable[[Callable[[dict[str, Any]], Any]], Callable[[dict[str, Any]], Any]]:
    """Declare which entity attributes a computed column reads (so updates know to rewrite it)."""
    def wrap(fn: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
        fn.attrs = set(attrs)  # type: ignore[attr-defined]
        return fn
    return wrap


@dataclass(frozen=True)
class Profile:
    """A vendor profile: dialect, schema, entity tables, id formats and dirty-data targets."""

    name: str
    dialect: str                      # "mariadb" or "postgres"
    ddl: Path
    schema: str | None                # PostgreSQL schema holding the tables (None: the database)
    specs: dict[str, TableSpec]
    codes: dict[str, dict[str, str]]  # neutral → local, per code kind (also seeds the code table)
    code_table: Callable[[str, str, str], dict[str, Any]]
    ids: dict[str, Callable[[int], Any]]
    # Table → columns a dirty insert may spoil, with how: "code", "missing" or "date".
    dirty: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    def qualified(self, table: str) -> str:
        return f"{self.schema}.{table}" if self.schema else table


# --- shared catalogue (the same hospital services, coded differently per vendor) ----------------

DEPARTMENTS: tuple[tuple[str, str, str, int], ...] = (
    # (neutral id, name, kind: O outpatient / I inpatient / M medical technology / A admin, beds)
    ("IM_O", "内科门诊", "O", 0), ("SU_O", "外科门诊", "O", 0), ("PE_O", "儿科门诊", "O", 0),
    ("GY_O", "妇科门诊", "O", 0), ("TCM_O", "中医科门诊", "O", 0), ("EM", "急诊科", "O", 0),
    ("CARD", "心血管内科", "I", 45), ("RESP", "呼吸内科", "I", 40), ("GAST", "消化内科", "I", 38),
    ("NEUR", "神经内科", "I", 42), ("GSUR", "普外科", "I", 50), ("ORTH", "骨科", "I", 46),
    ("OBGY", "妇产科", "I", 36), ("PEDI", "儿科", "I", 30),
    ("LAB", "检验科", "M", 0), ("RAD", "放射科", "M", 0), ("US", "超声科", "M", 0),
    ("PHAR", "药剂科", "M", 0), ("OR", "手术麻醉科", "M", 0), ("MED", "医务科", "A", 0),
)
OUTPATIENT_DEPTS = tuple(d[0] for d in DEPARTMENTS if d[2] == "O")
INPATIENT_DEPTS = tuple(d[0] for d in DEPARTMENTS if d[2] == "I")

DRUGS: tuple[tuple[str, str, str, str, str, str], ...] = (
    # (neutral id, name, spec, unit, kind W western / P patent / H herb, retail price)
    ("D01", "阿莫西林胶囊", "0.25g*24粒", "盒", "W", "18.5000"),
    ("D02", "头孢克肟分散片", "0.1g*6片", "盒", "W", "26.8000"),
    ("D03", "布洛芬缓释胶囊", "0.3g*20粒", "盒", "W", "15.2000"),
    ("D04", "奥美拉唑肠溶胶囊", "20mg*14粒", "盒", "W", "22.4000"),
    ("D05", "硝苯地平控释片", "30mg*7片", "盒", "W", "33.6000"),
    ("D06", "盐酸二甲双胍片", "0.5g*20片", "盒", "W", "9.8000"),
    ("D07", "阿司匹林肠溶片", "100mg*30片", "盒", "W", "14.5000"),
    ("D08", "0.9%氯化钠注射液", "250ml", "袋", "W", "4.2000"),
    ("D09", "5%葡萄糖注射液", "250ml", "袋", "W", "4.6000"),
    ("D10", "左氧氟沙星片", "0.5g*4片", "盒", "W", "19.9000"),
    ("D11", "阿托伐他汀钙片", "20mg*7片", "盒", "W", "38.7000"),
    ("D12", "注射用头孢呋辛钠", "0.75g", "支", "W", "12.3500"),
    ("P01", "连花清瘟胶囊", "0.35g*24粒", "盒", "P", "24.8000"),
    ("P02", "复方丹参滴丸", "27mg*180丸", "瓶", "P", "29.5000"),
    ("P03", "六味地黄丸", "200丸", "瓶", "P", "21.0000"),
    ("H01", "黄芪", "饮片", "g", "H", "0.1200"), ("H02", "当归", "饮片", "g", "H", "0.2600"),
    ("H03", "党参", "饮片", "g", "H", "0.1800"), ("H04", "白术", "饮片", "g", "H", "0.0900"),
    ("H05", "茯苓", "饮片", "g", "H", "0.0800"), ("H06", "甘草", "饮片", "g", "H", "0.0600"),
    ("H07", "川芎", "饮片", "g", "H", "0.1100"), ("H08", "陈皮", "饮片", "g", "H", "0.0500"),
)
FEE_ITEMS: tuple[tuple[str, str, str, str], ...] = (
    # (neutral id, name, neutral fee class, price)
    ("F01", "普通门诊诊查费", "DIAG", "10.0000"), ("F02", "静脉输液", "TREAT", "8.5000"),
    ("F03", "肌肉注射", "TREAT", "3.0000"), ("F04", "血常规", "LAB", "20.0000"),
    ("F05", "肝功能", "LAB", "45.0000"), ("F06", "胸部CT平扫", "EXAM", "280.0000"),
    ("F07", "腹部彩超", "EXAM", "160.0000"), ("F08", "常规心电图", "EXAM", "25.0000"),
    ("F09", "床位费(三人间)", "BED", "35.0000"), ("F10", "一级护理", "NURSE", "28.0000"),
    ("F11", "大换药", "TREAT", "30.0000"), ("F12", "阑尾切除术", "OPER", "980.0000"),
    ("F13", "一次性输液器", "MAT", "3.5000"), ("F14", "腹腔镜胆囊切除术", "OPER", "2600.0000"),
)
LAB_ITEMS: tuple[tuple[str, str, str, float, float, str], ...] = (
    # (code, name, unit, low, high, specimen)
    ("WBC", "白细胞计数", "10^9/L", 3.5, 9.5, "BLOOD"), ("RBC", "红细胞计数", "10^12/L", 4.3, 5.8, "BLOOD"),
    ("HGB", "血红蛋白", "g/L", 130, 175, "BLOOD"), ("PLT", "血小板计数", "10^9/L", 125, 350, "BLOOD"),
    ("ALT", "丙氨酸氨基转移酶", "U/L", 9, 50, "BLOOD"), ("AST", "天门冬氨酸氨基转移酶", "U/L", 15, 40, "BLOOD"),
    ("GLU", "葡萄糖", "mmol/L", 3.9, 6.1, "BLOOD"), ("CREA", "肌酐", "umol/L", 57, 111, "BLOOD"),
    ("UPRO", "尿蛋白定量", "g/L", 0, 0.15, "URINE"),
)
EXAMS: tuple[tuple[str, str, str, str], ...] = (
    # (neutral modality, item, body part, conclusion)
    ("CT", "胸部CT平扫", "胸部", "双肺纹理增多，未见明确实质性病变。"),
    ("DR", "胸部正位片", "胸部", "心肺膈未见明显异常。"),
    ("US", "腹部彩超", "肝胆胰脾", "脂肪肝（轻度），胆囊壁毛糙。"),
    ("MR", "头颅MRI平扫", "头颅", "双侧基底节区腔隙性脑梗死。"),
    ("ECG", "常规心电图", "心脏", "窦性心律，正常心电图。"),
)
DIAGNOSES: tuple[tuple[str, str], ...] = (
    ("J06.900", "急性上呼吸道感染"), ("J18.900", "肺炎"), ("I11.900", "高血压性心脏病"),
    ("E11.900", "2型糖尿病"), ("K29.700", "胃炎"), ("I63.900", "脑梗死"), ("K35.800", "急性阑尾炎"),
    ("K80.100", "胆囊结石伴慢性胆囊炎"), ("S52.500", "桡骨下端骨折"), ("N39.000", "泌尿道感染"),
    ("I25.103", "冠状动脉粥样硬化性心脏病"), ("J44.100", "慢性阻塞性肺病伴急性加重"),
)
OPERATIONS: tuple[tuple[str, str, str], ...] = (
    # (ICD-9-CM-3, name, level 1-4)
    ("47.0100", "腹腔镜下阑尾切除术", "2"), ("51.2300", "腹腔镜下胆囊切除术", "3"),
    ("79.3201", "桡骨骨折切开复位内固定术", "3"), ("36.0700", "冠状动脉药物洗脱支架置入术", "4"),
    ("86.2200", "伤口切除性清创术", "1"),
)
SUPPLIERS = ("国药控股吉林有限公司", "华润吉林医药有限公司", "吉林省医药有限责任公司", "九州通医药集团吉林有限公司")

# Neutral codes used by the generator; each profile maps them to local codes.
NEUTRAL: dict[str, tuple[str, ...]] = {
    "sex": ("M", "F", "U"),
    "id_type": ("ID", "HOUSEHOLD", "PASSPORT", "OFFICER", "HKMO", "OTHER"),
    "marital": ("SINGLE", "MARRIED", "WIDOWED", "DIVORCED", "OTHER"),
    "insurance": ("SELF", "EMPLOYEE", "RESIDENT", "RURAL", "COMMERCIAL"),
    "reg_type": ("GENERAL", "EXPERT", "EMERGENCY"),
    "admit_route": ("EMERGENCY", "OUTPATIENT", "REFERRAL", "OTHER"),
    "discharge_way": ("ORDERED", "TRANSFER", "COMMUNITY", "AGAINST_ADVICE", "DEATH", "OTHER"),
    "order_class": ("WM", "CPM", "CHM", "EXAM", "LAB", "OPER", "TREAT", "NURSE", "ENTRUST", "MAT"),
    "route": ("ORAL", "IVGTT", "IM", "SC", "TOPICAL"),
    "freq": ("QD", "BID", "TID", "QN", "ST"),
    "fee_class": ("WM", "CPM", "CHM", "EXAM", "LAB", "TREAT", "OPER", "BED", "NURSE", "MAT", "DIAG", "OTHER"),
    "op_level": ("1", "2", "3", "4"),
    "anesthesia": ("GENERAL", "SPINAL", "LOCAL", "COMBINED"),
    "specimen": ("BLOOD", "URINE", "STOOL", "SPUTUM"),
    "modality": ("CT", "DR", "US", "MR", "ECG"),
    "title": ("CHIEF", "ASSOC", "ATTEND", "RESIDENT", "NURSE", "TECH"),
    "staff_type": ("DOCTOR", "NURSE", "TECH", "PHARM", "ADMIN"),
    "stock_in": ("PURCHASE", "RETURN", "TRANSFER"),
    "stock_out": ("DISPENSE", "DEPT", "LOSS"),
    "appt_status": ("BOOKED", "ARRIVED", "CANCELLED", "NOSHOW"),
    "channel": ("WECHAT", "PHONE", "WINDOW", "APP"),
    "admit_condition": ("YES", "UNSURE", "UNKNOWN", "NO"),
    "nation": ("HAN", "KOREAN", "MANCHU", "HUI", "MONGOL"),
    "occupation": ("CIVIL", "PROF", "CLERK", "WORKER", "FARMER", "STUDENT", "RETIRED", "NONE"),
}


def _codes(neutral: str, local: tuple[str, ...]) -> dict[str, str]:
    return dict(zip(NEUTRAL[neutral], local, strict=True))


# --- vendor A: pinyin, MariaDB ------------------------------------------------------------------

A_CODES: dict[str, dict[str, str]] = {
    "sex": _codes("sex", ("1", "2", "0")),
    "id_type": _codes("id_type", ("1", "4", "2", "3", "5", "9")),
    "marital": _codes("marital", ("1", "2", "4", "3", "9")),
    "insurance": _codes("insurance", ("1000", "2001", "2002", "3001", "4001")),
    "reg_type": _codes("reg_type", ("01", "02", "03")),
    "admit_route": _codes("admit_route", ("2", "1", "3", "9")),
    "discharge_way": _codes("discharge_way", ("1", "2", "3", "4", "5", "9")),
    "order_class": _codes("order_class", ("01", "02", "03", "04", "05", "06", "07", "08", "09", "10")),
    "route": _codes("route", ("01", "02", "03", "04", "05")),
    "freq": _codes("freq", ("qd", "bid", "tid", "qn", "st")),
    "fee_class": _codes("fee_class", ("01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "99")),
    "op_level": _codes("op_level", ("1", "2", "3", "4")),
    "anesthesia": _codes("anesthesia", ("01", "02", "03", "04")),
    "specimen": _codes("specimen", ("01", "02", "03", "04")),
    "modality": _codes("modality", ("CT", "DR", "US", "MR", "XD")),
    "title": _codes("title", ("Z1", "Z2", "Z3", "Z4", "H3", "J3")),
    "staff_type": _codes("staff_type", ("1", "2", "3", "4", "5")),
    "stock_in": _codes("stock_in", ("01", "02", "03")),
    "stock_out": _codes("stock_out", ("11", "12", "13")),
    "appt_status": _codes("appt_status", ("0", "1", "2", "3")),
    "channel": _codes("channel", ("WX", "DH", "CK", "AP")),
    "admit_condition": _codes("admit_condition", ("1", "2", "3", "4")),
    "nation": _codes("nation", ("01", "10", "03", "04", "02")),
    "occupation": _codes("occupation", ("11", "13", "17", "24", "27", "31", "80", "70")),
    "dept": {d[0]: f"{i + 1:02d}{'01' if d[2] == 'O' else '02' if d[2] == 'I' else '03'}"
             for i, d in enumerate(DEPARTMENTS)},
    "drug": {d[0]: str(1000 + i) for i, d in enumerate(DRUGS)},
    "fee_item": {f[0]: str(500 + i) for i, f in enumerate(FEE_ITEMS)},
    "drug_kind": {"W": "1", "P": "2", "H": "3"},
    "bool": {"T": "1", "F": "0"},
}

_A = A_CODES


@uses("sex")
def _a_staff_sex(e: dict[str, Any]) -> Any:
    return _A["sex"][e["sex"]]


A_SPECS: dict[str, TableSpec] = {
    "dept": TableSpec("GY_KSDM", ("KSDM",), {
        "KSDM": ("dept", _A["dept"]), "KSMC": "name",
        "KSLB": ("kind", {"O": "1", "I": "2", "M": "3", "A": "4"}), "SJKS": "parent",
        "PYDM": "pinyin", "CWS": "beds", "ZFBZ": "void", "CJSJ": "created", "XGSJ": "modified"}),
    "staff": TableSpec("GY_YGDM", ("YGDM",), {
        "YGDM": "code", "YGXM": "name", "YGXB": _a_staff_sex, "CSNY": "birth", "SFZH": "id_no",
        "KSDM": ("dept", _A["dept"]), "YGLB": ("staff_type", _A["staff_type"]),
        "ZCDM": ("title", _A["title"]), "ZYZSH": "license", "RZRQ": "hired", "ZFBZ": "void",
        "XGSJ": "modified"}),
    "drug": TableSpec("YK_YPML", ("YPXH",), {
        "YPXH": ("drug", {k: v for k, v in _A["drug"].items()}), "YPMC": "name", "YPGG": "spec",
        "YPDW": "unit", "JXDM": "form", "YPLB": ("kind", _A["drug_kind"]), "SCCJ": "maker",
        "PZWH": "approval", "LSJG": "price", "ZFBZ": "void"}),
    "fee_item": TableSpec("GY_SFXM", ("FYXH",), {
        "FYXH": ("item", _A["fee_item"]), "FYMC": "name", "FYGB": ("fee_class", _A["fee_class"]),
        "FYDJ": "price", "FYDW": "unit", "ZFBZ": "void"}),
    "bed": TableSpec("ZY_CWSZ", ("BRCH",), {
        "BRCH": "bed", "KSDM": ("dept", _A["dept"]), "BQDM": ("dept", _A["dept"]), "ZYH": "admission",
        "JCBZ": "extra", "CWZT": ("state", {"FREE": "0", "USED": "1", "OFF": "9"}), "XGSJ": "modified"}),
    "patient": TableSpec("MS_BRDA", ("BRID",), {
        "BRID": "pid", "MZHM": "card_no", "BRXM": "name", "BRXB": ("sex", _A["sex"]), "CSNY": "birth",
        "ZJLX": ("id_type", _A["id_type"]), "SFZH": "id_no", "HYZK": ("marital", _A["marital"]),
        "MZDM": ("nation", _A["nation"]), "ZYDM": ("occupation", _A["occupation"]), "LXDH": "phone",
        "LXDZ": "address", "BRXZ": ("insurance", _A["insurance"]), "JDSJ": "created",
        "XGSJ": "modified", "ZFBZ": "void"}),
    "appointment": TableSpec("MS_YYGH", ("YYXH",), {
        "YYXH": "aid", "BRID": "pid", "YYRQ": "date", "YYSD": ("slot", {"AM": "1", "PM": "2"}),
        "KSDM": ("dept", _A["dept"]), "YSDM": "doctor", "YYQD": ("channel", _A["channel"]),
        "YYZT": ("status", _A["appt_status"]), "DJSJ": "booked", "XGSJ": "modified"}),
    "registration": TableSpec("MS_GHMX", ("SBXH",), {
        "SBXH": "rid", "BRID": "pid", "GHSJ": "time", "GHLB": ("reg_type", _A["reg_type"]),
        "KSDM": ("dept", _A["dept"]), "YSDM": "doctor", "GHJE": "reg_fee", "ZLJE": "diag_fee",
        "BRXZ": ("insurance", _A["insurance"]), "YYXH": "aid", "THBZ": ("cancelled", {"T": 1, "F": 0}),  # type: ignore[dict-item]
        "JZZT": ("state", {"WAIT": "0", "IN": "1", "DONE": "2"}), "XGSJ": "modified"}),
    "visit": TableSpec("MS_JZLS", ("JZXH",), {
        "JZXH": "vid", "GHXH": "rid", "BRID": "pid", "KSDM": ("dept", _A["dept"]), "YSDM": "doctor",
        "KSSJ": "start", "JSSJ": "end", "ZDDM": "diag_code", "ZDMC": "diag_name", "ZS": "complaint",
        "XBS": "illness", "FZBZ": ("revisit", {"T": 1, "F": 0}),  # type: ignore[dict-item]
        "JZLX": ("emergency", {"T": "2", "F": "1"})}),
    "prescription": TableSpec("MS_CF01", ("CFSB",), {
        "CFSB": "prid", "CFHM": "presc_no", "JZXH": "vid", "BRID": "pid",
        "CFLX": ("kind", {"W": "1", "P": "2", "H": "3"}), "KFRQ": "time", "KSDM": ("dept", _A["dept"]),
        "YSDM": "doctor", "CFTS": "doses", "ZFPB": ("void", {"T": 1, "F": 0}), "FYBZ": "dispensed"}),  # type: ignore[dict-item]
    "prescription_line": TableSpec("MS_CF02", ("SBXH",), {
        "SBXH": "lid", "CFSB": "prid", "CFLX": ("kind", {"W": "1", "P": "2", "H": "3"}), "BRID": "pid",
        "YPXH": ("drug", _A["drug"]), "YPSL": "qty", "YPDJ": "price", "HJJE": "amount", "YCJL": "dose",
        "JLDW": "dose_unit", "GYTJ": ("route", _A["route"]), "YPYF": ("freq", _A["freq"]),
        "YYTS": "days", "JZ": "note"}),
    "outpatient_order": TableSpec("MS_MZYZ", ("YZXH",), {
        "YZXH": "oid", "JZXH": "vid", "BRID": "pid", "YZLX": ("order_class", _A["order_class"]),
        "XMDM": "item", "YZMC": "content", "YCJL": "dose", "JLDW": "dose_unit",
        "GYTJ": ("route", _A["route"]), "YPYF": ("freq", _A["freq"]), "KZSJ": "time",
        "KSDM": ("dept", _A["dept"]), "YSDM": "doctor",
        "ZXZT": ("status", {"NEW": "0", "DONE": "1", "VOID": "9"})}),
    "outpatient_fee": TableSpec("MS_SFMX", ("SBXH",), {
        "SBXH": "fid", "FPHM": "invoice", "BRID": "pid", "JZXH": "vid", "FYXH": ("item", _A["fee_item"]),
        "FYMC": "item_name", "FYGB": ("fee_class", _A["fee_class"]), "SL": "qty", "DJ": "price",
        "JE": "amount", "ZFJE": "self", "SFRQ": "time", "KSDM": ("dept", _A["dept"]),
        "THBZ": ("refunded", {"T": 1, "F": 0})}),  # type: ignore[dict-item]
    "admission": TableSpec("ZY_BRRY", ("ZYH",), {
        "ZYH": "adm", "ZYHM": "inpatient_no", "BAHM": "case_no", "ZYCS": "times", "BRID": "pid",
        "BRXM": "name", "BRXB": ("sex", _A["sex"]), "CSNY": "birth", "SFZH": "id_no",
        "BRXZ": ("insurance", _A["insurance"]), "RYTJ": ("route", _A["admit_route"]),
        "RYSJ": "admit_time", "RYKS": ("dept", _A["dept"]), "BRBQ": ("dept", _A["dept"]), "BRCH": "bed",
        "MZZD": "diag_code", "ZSYS": "doctor", "CYSJ": "discharge_time",
        "CYKS": ("discharge_dept", _A["dept"]), "CYFS": ("discharge_way", _A["discharge_way"]),
        "CYPB": ("status", {"IN": 0, "OUT": 1, "CANCEL": 8}), "XGSJ": "modified"}),  # type: ignore[dict-item]
    "inpatient_order": TableSpec("ZY_BQYZ", ("JLXH",), {
        "JLXH": "oid", "ZYH": "adm", "YZLB": ("long_term", {"T": "0", "F": "1"}),
        "YZLX": ("order_class", _A["order_class"]), "XMDM": "item", "YZMC": "content", "YCJL": "dose",
        "JLDW": "dose_unit", "GYTJ": ("route", _A["route"]), "SYPC": ("freq", _A["freq"]),
        "KZSJ": "start", "KZYS": "doctor", "TZSJ": "stop", "TZYS": "stop_doctor",
        "KSDM": ("dept", _A["dept"]), "YZZT": ("status", {"NEW": "0", "EXEC": "1", "STOP": "2", "VOID": "9"})}),
    "inpatient_fee": TableSpec("ZY_FYMX", ("JLXH",), {
        "JLXH": "fid", "ZYH": "adm", "FYRQ": "time", "FYXH": ("item", _A["fee_item"]), "FYMC": "item_name",
        "FYGB": ("fee_class", _A["fee_class"]), "FYSL": "qty", "FYDJ": "price", "ZJJE": "amount",
        "ZFJE": "self", "FYKS": ("dept", _A["dept"]), "YZXH": "oid"}),
    "front_sheet": TableSpec("BA_BASY", ("ZYH",), {
        "ZYH": "adm", "BAHM": "case_no", "ZYCS": "times", "BRXM": "name", "BRXB": ("sex", _A["sex"]),
        "CSNY": "birth", "NL": "age", "SFZH": "id_no", "FKFS": ("insurance", _A["insurance"]),
        "RYTJ": ("route", _A["admit_route"]), "RYSJ": "admit_time", "RYKS": ("dept", _A["dept"]),
        "CYSJ": "discharge_time", "CYKS": ("discharge_dept", _A["dept"]), "SJZYTS": "days",
        "ZYZD": "diag_code", "ZYZDMC": "diag_name", "RYBQ": ("admit_condition", _A["admit_condition"]),
        "QTZD1": "other_diag_1", "QTZD2": "other_diag_2", "SSDM": "op_code", "SSMC": "op_name",
        "LYFS": ("discharge_way", _A["discharge_way"]), "ZFY": "total", "ZFJE": "self",
        "XYF": "fee_WM", "ZCYF": "fee_CPM", "ZCAOYF": "fee_CHM", "JCF": "fee_EXAM", "HYF": "fee_LAB",
        "SSF": "fee_OPER", "CLF": "fee_MAT", "QTF": "fee_OTHER", "BAZT": ("archived", {"T": "1", "F": "0"}),
        "XGSJ": "modified"}),
    "lab_result": TableSpec("JY_JYJG", ("JGXH",), {
        "JGXH": "lid", "BGDH": "report_no", "SQDH": "apply_no", "BRID": "pid",
        "JZLX": ("inpatient", {"T": "2", "F": "1"}), "JZHM": "visit_no", "XMDM": "item",
        "XMMC": "item_name", "JYJG": "value", "JGDW": "unit", "CKFW": "range", "YCBZ": "flag",
        "BBLX": ("specimen", _A["specimen"]), "CYSJ": "sampled", "BGSJ": "reported",
        "SQKS": ("dept", _A["dept"]), "SHYS": "reviewer"}),
    "exam_report": TableSpec("JC_BGD", ("BGDH",), {
        "BGDH": "report_no", "SQDH": "apply_no", "BRID": "pid", "JZLX": ("inpatient", {"T": "2", "F": "1"}),
        "JZHM": "visit_no", "JCLX": ("modality", _A["modality"]), "JCXM": "item", "JCBW": "body_part",
        "JCSJ": "examined", "BGSJ": "reported", "KGSJ": "findings", "ZGTS": "conclusion",
        "SQKS": ("dept", _A["dept"]), "BGYS": "doctor", "BGZT": ("revised", {"T": "2", "F": "1"})}),
    "operation": TableSpec("SS_SSJL", ("SSXH",), {
        "SSXH": "op_id", "ZYH": "adm", "BRID": "pid", "SSDM": "code", "SSMC": "name",
        "SSJB": ("level", _A["op_level"]), "MZFS": ("anesthesia", _A["anesthesia"]), "QKDJ": "incision",
        "KSSJ": "start", "JSSJ": "end", "ZDYS": "surgeon", "SSKS": ("dept", _A["dept"]),
        "SSZT": ("status", {"DONE": "1", "CANCEL": "9"})}),
    "stock_in": TableSpec("YK_RK01", ("RKDH", "XH"), {
        "RKDH": "doc_no", "XH": "line", "RKRQ": "time", "RKFS": ("type", _A["stock_in"]),
        "YPXH": ("drug", _A["drug"]), "YPPH": "batch", "YXQ": "expiry", "RKSL": "qty",
        "JHJG": "buy_price", "JHJE": "buy_amount", "LSJG": "retail_price", "GHDW": "supplier"}),
    "stock_out": TableSpec("YF_CK01", ("CKDH", "XH"), {
        "CKDH": "doc_no", "XH": "line", "CKRQ": "time", "CKFS": ("type", _A["stock_out"]),
        "YPXH": ("drug", _A["drug"]), "YPPH": "batch", "CKSL": "qty", "LSJG": "retail_price",
        "LSJE": "retail_amount", "LYKS": ("dept", _A["dept"])}),
}

VENDOR_A = Profile(
    name="vendor_a", dialect="mariadb", ddl=SQL_DIR / "vendor_a.mariadb.sql", schema=None,
    specs=A_SPECS, codes=A_CODES,
    code_table=lambda kind, code, name: {"DMLB": kind, "DMSB": code, "DMSM": name, "PYDM": None, "ZFBZ": 0},
    ids={"card_no": lambda n: f"MZ{n:010d}", "inpatient_no": lambda n: f"{n:010d}",
         "case_no": lambda n: f"BA{n:010d}", "presc_no": lambda n: f"CF{n:012d}",
         "report_no": lambda n: f"JY{n:012d}", "exam_no": lambda n: f"JC{n:012d}",
         "apply_no": lambda n: f"SQ{n:012d}", "doc_no": lambda n: f"RK{n:012d}",
         "out_no": lambda n: f"CK{n:012d}", "invoice": lambda n: f"FP{n:012d}",
         "patient": lambda n: n, "admission": lambda n: n},
    dirty={
        "MS_BRDA": (("BRXB", "code"), ("BRXM", "missing"), ("CSNY", "date")),
        "MS_GHMX": (("GHLB", "code"), ("GHSJ", "missing")),
        "ZY_BRRY": (("RYTJ", "code"), ("RYSJ", "date")),
        "ZY_FYMX": (("FYGB", "code"), ("FYRQ", "missing")),
        "JY_JYJG": (("BBLX", "code"), ("BGSJ", "missing")),
    },
)

# --- vendor B: English snake case, PostgreSQL --------------------------------------------------

B_CODES: dict[str, dict[str, str]] = {
    "sex": _codes("sex", ("M", "F", "U")),
    "id_type": _codes("id_type", ("ID", "HK", "PP", "MO", "HM", "OT")),
    "marital": _codes("marital", ("S", "M", "W", "D", "O")),
    "insurance": _codes("insurance", ("SELF", "UEBMI", "URBMI", "NCMS", "COMM")),
    "reg_type": _codes("reg_type", ("GEN", "EXP", "EMG")),
    "admit_route": _codes("admit_route", ("EMG", "OPD", "REF", "OTH")),
    "discharge_way": _codes("discharge_way", ("NORMAL", "TRANSFER", "COMMUNITY", "AMA", "DEATH", "OTHER")),
    "order_class": _codes("order_class", ("WM", "CPM", "CHM", "EXAM", "LAB", "OPER", "TREAT", "NURSE", "ENTRUST", "MAT")),
    "route": _codes("route", ("PO", "IVGTT", "IM", "H", "EXT")),
    "freq": _codes("freq", ("QD", "BID", "TID", "QN", "ST")),
    "fee_class": _codes("fee_class", ("WM", "CPM", "CHM", "EXAM", "LAB", "TREAT", "OPER", "BED", "NURSE", "MAT", "DIAG", "OTH")),
    "op_level": _codes("op_level", ("L1", "L2", "L3", "L4")),
    "anesthesia": _codes("anesthesia", ("GA", "SA", "LA", "CA")),
    "specimen": _codes("specimen", ("BLD", "URN", "STL", "SPT")),
    "modality": _codes("modality", ("CT", "DR", "US", "MR", "ECG")),
    "title": _codes("title", ("T231", "T232", "T233", "T234", "T242", "T263")),
    "staff_type": _codes("staff_type", ("DOC", "NUR", "TEC", "PHA", "ADM")),
    "stock_in": _codes("stock_in", ("PUR", "RET", "TRF")),
    "stock_out": _codes("stock_out", ("DSP", "DPT", "LOS")),
    "appt_status": _codes("appt_status", ("BOOKED", "ARRIVED", "CANCELLED", "NOSHOW")),
    "channel": _codes("channel", ("WECHAT", "PHONE", "WINDOW", "APP")),
    "admit_condition": _codes("admit_condition", ("Y", "U", "K", "N")),
    "nation": _codes("nation", ("HAN", "KOR", "MAN", "HUI", "MGL")),
    "occupation": _codes("occupation", ("GOV", "PRO", "STAFF", "WORK", "FARM", "STU", "RET", "NONE")),
    "dept": {d[0]: f"D{i + 1:03d}" for i, d in enumerate(DEPARTMENTS)},
    "drug": {d[0]: f"YP{d[0]}{i:04d}" for i, d in enumerate(DRUGS)},
    "fee_item": {f[0]: f"XM{i + 1:05d}" for i, f in enumerate(FEE_ITEMS)},
    "drug_kind": {"W": "W", "P": "P", "H": "H"},
}
_B = B_CODES


@uses("inpatient")
def _b_visit_type(e: dict[str, Any]) -> Any:
    return "I" if e["inpatient"] == "T" else "O"


B_SPECS: dict[str, TableSpec] = {
    "dept": TableSpec("base_dept", ("dept_code",), {
        "dept_code": ("dept", _B["dept"]), "dept_name": "name",
        "dept_type": ("kind", {"O": "OP", "I": "IP", "M": "MT", "A": "AD"}), "parent_code": "parent",
        "bed_count": "beds", "is_valid": ("void", {0: True, 1: False}), "created_at": "created",  # type: ignore[dict-item]
        "updated_at": "modified"}),
    "staff": TableSpec("base_staff", ("staff_id",), {
        "staff_id": "code", "staff_name": "name", "gender": ("sex", _B["sex"]), "birth_date": "birth",
        "id_card": "id_no", "dept_code": ("dept", _B["dept"]), "staff_type": ("staff_type", _B["staff_type"]),
        "title_code": ("title", _B["title"]), "license_no": "license", "hire_date": "hired",
        "is_valid": ("void", {0: True, 1: False}), "updated_at": "modified"}),  # type: ignore[dict-item]
    "drug": TableSpec("base_drug", ("drug_code",), {
        "drug_code": ("drug", _B["drug"]), "drug_name": "name", "spec": "spec", "unit": "unit",
        "dosage_form": "form", "drug_kind": ("kind", _B["drug_kind"]), "manufacturer": "maker",
        "approval_no": "approval", "retail_price": "price", "is_valid": ("void", {0: True, 1: False})}),  # type: ignore[dict-item]
    "fee_item": TableSpec("base_fee_item", ("item_code",), {
        "item_code": ("item", _B["fee_item"]), "item_name": "name", "fee_class": ("fee_class", _B["fee_class"]),
        "price": "price", "unit": "unit", "is_valid": ("void", {0: True, 1: False})}),  # type: ignore[dict-item]
    "bed": TableSpec("inpt_bed", ("ward_code", "bed_no"), {
        "ward_code": ("dept", _B["dept"]), "bed_no": "bed", "dept_code": ("dept", _B["dept"]),
        "inpt_id": "admission", "is_extra": ("extra", {0: False, 1: True}),  # type: ignore[dict-item]
        "bed_status": ("state", {"FREE": "EMPTY", "USED": "OCCUPIED", "OFF": "CLOSED"}), "updated_at": "modified"}),
    "patient": TableSpec("pat_info", ("pat_id",), {
        "pat_id": "pid", "card_no": "card_no", "name": "name", "gender_code": ("sex", _B["sex"]),
        "birth_date": "birth", "id_type": ("id_type", _B["id_type"]), "id_no": "id_no",
        "marital_code": ("marital", _B["marital"]), "nation_code": ("nation", _B["nation"]),
        "occupation": ("occupation", _B["occupation"]), "phone": "phone", "address": "address",
        "insurance_type": ("insurance", _B["insurance"]), "created_at": "created", "updated_at": "modified"}),
    "appointment": TableSpec("outpt_appointment", ("appt_id",), {
        "appt_id": "aid", "pat_id": "pid", "dept_code": ("dept", _B["dept"]), "doctor_id": "doctor",
        "appt_date": "date", "time_slot": "slot", "channel": ("channel", _B["channel"]),
        "appt_status": ("status", _B["appt_status"]), "booked_at": "booked", "updated_at": "modified"}),
    "registration": TableSpec("outpt_register", ("reg_id",), {
        "reg_id": "rid", "pat_id": "pid", "reg_time": "time", "reg_type": ("reg_type", _B["reg_type"]),
        "dept_code": ("dept", _B["dept"]), "doctor_id": "doctor", "reg_fee": "reg_fee",
        "diag_fee": "diag_fee", "insurance_type": ("insurance", _B["insurance"]), "appt_id": "aid",
        "status": ("cancelled", {"T": "CANCELLED", "F": "NORMAL"}), "updated_at": "modified"}),
    "visit": TableSpec("outpt_visit", ("visit_id",), {
        "visit_id": "vid", "reg_id": "rid", "pat_id": "pid", "visit_type": ("emergency", {"T": "EMG", "F": "OPD"}),
        "dept_code": ("dept", _B["dept"]), "doctor_id": "doctor", "visit_time": "start", "end_time": "end",
        "diag_code": "diag_code", "diag_name": "diag_name", "chief_complaint": "complaint",
        "present_illness": "illness", "is_revisit": ("revisit", {"T": True, "F": False})}),  # type: ignore[dict-item]
    "prescription": TableSpec("outpt_prescribe", ("presc_no",), {
        "presc_no": "presc_no", "visit_id": "vid", "pat_id": "pid",
        "presc_type": ("kind", {"W": "WM", "P": "CPM", "H": "CHM"}), "presc_time": "time",
        "dept_code": ("dept", _B["dept"]), "doctor_id": "doctor", "herb_doses": "doses",
        "status": ("void", {"T": "VOID", "F": "VALID"})}),
    "prescription_line": TableSpec("outpt_prescribe_detail", ("presc_no", "line_no"), {
        "presc_no": "presc_no", "line_no": "line", "presc_type": ("kind", {"W": "WM", "P": "CPM", "H": "CHM"}),
        "pat_id": "pid", "drug_code": ("drug", _B["drug"]), "qty": "qty", "unit_price": "price",
        "amount": "amount", "dose": "dose", "dose_unit": "dose_unit", "route_code": ("route", _B["route"]),
        "freq_code": ("freq", _B["freq"]), "days": "days", "decoction": "note"}),
    "outpatient_order": TableSpec("outpt_order", ("order_id",), {
        "order_id": "oid", "visit_id": "vid", "pat_id": "pid", "order_class": ("order_class", _B["order_class"]),
        "item_code": "item", "item_name": "content", "dose": "dose", "dose_unit": "dose_unit",
        "route_code": ("route", _B["route"]), "freq_code": ("freq", _B["freq"]), "order_time": "time",
        "dept_code": ("dept", _B["dept"]), "doctor_id": "doctor",
        "status": ("status", {"NEW": "NEW", "DONE": "EXEC", "VOID": "CANCEL"})}),
    "outpatient_fee": TableSpec("outpt_cost", ("cost_id",), {
        "cost_id": "fid", "invoice_no": "invoice", "pat_id": "pid", "visit_id": "vid",
        "item_code": ("item", _B["fee_item"]), "item_name": "item_name", "fee_class": ("fee_class", _B["fee_class"]),
        "qty": "qty", "price": "price", "amount": "amount", "self_amount": "self", "charge_time": "time",
        "dept_code": ("dept", _B["dept"]), "status": ("refunded", {"T": "REFUND", "F": "NORMAL"})}),
    "admission": TableSpec("inpt_visit", ("inpt_id",), {
        "inpt_id": "adm", "pat_id": "pid", "inpt_no": "inpatient_no", "case_no": "case_no",
        "inpt_times": "times", "name": "name", "gender_code": ("sex", _B["sex"]), "birth_date": "birth",
        "id_no": "id_no", "insurance_type": ("insurance", _B["insurance"]),
        "admit_route": ("route", _B["admit_route"]), "admit_time": "admit_time",
        "admit_dept": ("dept", _B["dept"]), "ward_code": ("dept", _B["dept"]), "bed_no": "bed",
        "admit_diag": "diag_code", "attending_doctor": "doctor", "discharge_time": "discharge_time",
        "discharge_dept": ("discharge_dept", _B["dept"]), "discharge_way": ("discharge_way", _B["discharge_way"]),
        "status": ("status", {"IN": "IN", "OUT": "OUT", "CANCEL": "CANCEL"}), "updated_at": "modified"}),
    "inpatient_order": TableSpec("inpt_advice", ("advice_id",), {
        "advice_id": "oid", "inpt_id": "adm", "advice_kind": ("long_term", {"T": "L", "F": "T"}),
        "item_class": ("order_class", _B["order_class"]), "item_code": "item", "advice_content": "content",
        "dose": "dose", "dose_unit": "dose_unit", "route_code": ("route", _B["route"]),
        "freq_code": ("freq", _B["freq"]), "start_time": "start", "doctor_id": "doctor", "stop_time": "stop",
        "stop_doctor": "stop_doctor", "dept_code": ("dept", _B["dept"]),
        "status": ("status", {"NEW": "NEW", "EXEC": "EXEC", "STOP": "STOP", "VOID": "CANCEL"})}),
    "inpatient_fee": TableSpec("inpt_cost", ("cost_id",), {
        "cost_id": "fid", "inpt_id": "adm", "charge_time": "time", "item_code": ("item", _B["fee_item"]),
        "item_name": "item_name", "fee_class": ("fee_class", _B["fee_class"]), "qty": "qty", "price": "price",
        "amount": "amount", "self_amount": "self", "dept_code": ("dept", _B["dept"]), "advice_id": "oid"}),
    "front_sheet": TableSpec("mr_homepage", ("inpt_id",), {
        "inpt_id": "adm", "case_no": "case_no", "inpt_times": "times", "name": "name",
        "gender_code": ("sex", _B["sex"]), "birth_date": "birth", "age": "age", "id_no": "id_no",
        "pay_way": ("insurance", _B["insurance"]), "admit_route": ("route", _B["admit_route"]),
        "admit_time": "admit_time", "admit_dept": ("dept", _B["dept"]), "discharge_time": "discharge_time",
        "discharge_dept": ("discharge_dept", _B["dept"]), "inpt_days": "days", "main_diag_code": "diag_code",
        "main_diag_name": "diag_name", "admit_condition": ("admit_condition", _B["admit_condition"]),
        "other_diag_1": "other_diag_1", "other_diag_2": "other_diag_2", "oper_code": "op_code",
        "oper_name": "op_name", "discharge_way": ("discharge_way", _B["discharge_way"]), "total_fee": "total",
        "self_fee": "self", "western_drug_fee": "fee_WM", "patent_drug_fee": "fee_CPM", "herbal_fee": "fee_CHM",
        "exam_fee": "fee_EXAM", "lab_fee": "fee_LAB", "oper_fee": "fee_OPER", "material_fee": "fee_MAT",
        "other_fee": "fee_OTHER", "archived": ("archived", {"T": True, "F": False}),  # type: ignore[dict-item]
        "updated_at": "modified"}),
    "lab_result": TableSpec("medic_result", ("result_id",), {
        "result_id": "lid", "apply_no": "apply_no", "report_no": "report_no", "pat_id": "pid",
        "visit_type": _b_visit_type, "visit_no": "visit_no", "result_type": lambda e: "LAB",
        "item_code": "item", "item_name": "item_name", "result_value": "value", "unit": "unit",
        "ref_range": "range", "abnormal_flag": "flag", "specimen": ("specimen", _B["specimen"]),
        "sample_time": "sampled", "report_time": "reported_tz", "apply_dept": ("dept", _B["dept"]),
        "reporter": "reviewer"}),
    "exam_report": TableSpec("medic_result", ("result_id",), {
        "result_id": "lid", "apply_no": "apply_no", "report_no": "report_no", "pat_id": "pid",
        "visit_type": _b_visit_type, "visit_no": "visit_no", "result_type": lambda e: "EXAM",
        "item_code": ("modality", _B["modality"]), "item_name": "item", "body_part": "body_part",
        "exam_findings": "findings", "exam_conclusion": "conclusion", "sample_time": "examined",
        "report_time": "reported_tz", "apply_dept": ("dept", _B["dept"]), "reporter": "doctor"}),
    "operation": TableSpec("oper_info_record", ("oper_id",), {
        "oper_id": "op_id", "inpt_id": "adm", "pat_id": "pid", "oper_code": "code", "oper_name": "name",
        "oper_level": ("level", _B["op_level"]), "anes_method": ("anesthesia", _B["anesthesia"]),
        "incision_class": "incision", "start_time": "start", "end_time": "end", "surgeon_id": "surgeon",
        "oper_dept": ("dept", _B["dept"]), "status": ("status", {"DONE": "DONE", "CANCEL": "CANCEL"})}),
    "stock_in": TableSpec("phar_in_receive_detail", ("receive_no", "line_no"), {
        "receive_no": "doc_no", "line_no": "line", "receive_time": "time", "in_type": ("type", _B["stock_in"]),
        "drug_code": ("drug", _B["drug"]), "batch_no": "batch", "expire_date": "expiry", "qty": "qty",
        "buy_price": "buy_price", "buy_amount": "buy_amount", "retail_price": "retail_price",
        "supplier": "supplier"}),
    "stock_out": TableSpec("phar_out_detail", ("out_no", "line_no"), {
        "out_no": "doc_no", "line_no": "line", "out_time": "time", "out_type": ("type", _B["stock_out"]),
        "drug_code": ("drug", _B["drug"]), "batch_no": "batch", "qty": "qty", "retail_price": "retail_price",
        "retail_amount": "retail_amount", "target_dept": ("dept", _B["dept"])}),
}

VENDOR_B = Profile(
    name="vendor_b", dialect="postgres", ddl=SQL_DIR / "vendor_b.postgres.sql", schema="his",
    specs=B_SPECS, codes=B_CODES,
    code_table=lambda kind, code, name: {"dict_type": kind, "code": code, "name": name, "is_valid": True},
    ids={"card_no": lambda n: f"{n:012d}", "inpatient_no": lambda n: f"ZY{n:08d}",
         "case_no": lambda n: f"{n:010d}", "presc_no": lambda n: f"RX{n:012d}",
         "report_no": lambda n: f"RPT{n:011d}", "exam_no": lambda n: f"EXM{n:011d}",
         "apply_no": lambda n: f"AP{n:012d}", "doc_no": lambda n: f"IN{n:012d}",
         "out_no": lambda n: f"OUT{n:011d}", "invoice": lambda n: f"INV{n:011d}",
         "patient": lambda n: f"P{n:011d}", "admission": lambda n: f"IP{n:012d}"},
    dirty={
        "pat_info": (("gender_code", "code"), ("name", "missing"), ("birth_date", "date")),
        "outpt_register": (("reg_type", "code"), ("reg_time", "missing")),
        "inpt_visit": (("admit_route", "code"), ("admit_time", "date")),
        "inpt_cost": (("fee_class", "code"), ("charge_time", "missing")),
        "medic_result": (("specimen", "code"), ("report_time", "missing")),
    },
)

PROFILES: dict[str, Profile] = {"a": VENDOR_A, "b": VENDOR_B}

# Chinese labels of the local codes, seeded into each vendor's own code dictionary table.
CODE_LABELS: dict[str, dict[str, str]] = {
    "sex": {"M": "男", "F": "女", "U": "未知"},
    "id_type": {"ID": "居民身份证", "HOUSEHOLD": "户口簿", "PASSPORT": "护照", "OFFICER": "军官证",
                "HKMO": "港澳居民来往内地通行证", "OTHER": "其他"},
    "marital": {"SINGLE": "未婚", "MARRIED": "已婚", "WIDOWED": "丧偶", "DIVORCED": "离婚", "OTHER": "其他"},
    "insurance": {"SELF": "自费", "EMPLOYEE": "城镇职工医保", "RESIDENT": "城乡居民医保", "RURAL": "新农合",
                  "COMMERCIAL": "商业保险"},
    "admit_route": {"EMERGENCY": "急诊", "OUTPATIENT": "门诊", "REFERRAL": "外院转入", "OTHER": "其他"},
    "discharge_way": {"ORDERED": "医嘱离院", "TRANSFER": "医嘱转院", "COMMUNITY": "转社区", "AGAINST_ADVICE": "非医嘱离院",
                      "DEATH": "死亡", "OTHER": "其他"},
}
