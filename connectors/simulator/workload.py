"""Simulated hospital days: a deterministic generator of SQL row operations, and a thin executor.

:class:`Workload` is pure: from a vendor profile, a seed and a start time it yields transactions
(lists of row inserts, updates and deletes) such as a hospital makes: patients registered and
their details corrected, registrations cancelled, visits with prescriptions and fees, refunds,
admissions with orders and daily fees, orders stopped, lab results corrected, operations,
discharges with the front sheet, drug stock in and out. A configurable share of inserted rows is
spoiled (unknown local code, missing value, impossible date) so the dead-letter and quality paths
have work. :func:`execute` runs transactions on a PyMySQL or psycopg2 connection.
"""
from __future__ import annotations

import random
import time as _time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Callable, Iterable, Iterator

from connectors.simulator import identity
from connectors.simulator.profiles import (
    CODE_LABELS, DEPARTMENTS, DIAGNOSES, DRUGS, EXAMS, FEE_ITEMS, INPATIENT_DEPTS, LAB_ITEMS,
    NEUTRAL, OPERATIONS, OUTPATIENT_DEPTS, SUPPLIERS, Profile)

CENT = Decimal("0.01")
SHANGHAI = timezone(timedelta(hours=8))


@dataclass(frozen=True)
class Op:
    """One row change. ``values``: the row (insert) or the changed columns (update)."""

    kind: str                         # "insert", "update", "delete"
    table: str
    values: dict[str, Any]
    key: dict[str, Any]
    dirty: str | None = None          # how the row was spoiled, if it was


@dataclass
class Transaction:
    """Row changes committed together, and what the hospital was doing."""

    action: str
    ops: list[Op] = field(default_factory=list)


@dataclass
class Stats:
    transactions: int = 0
    changes: int = 0
    inserts: int = 0
    dirty: int = 0
    by_action: dict[str, int] = field(default_factory=dict)


def money(value: Decimal | float | str) -> Decimal:
    return Decimal(str(value)).quantize(CENT, ROUND_HALF_UP)


class Workload:
    """Deterministic hospital activity for one vendor profile.

    Identifiers come from one counter starting at ``id_start`` so a later run on the same database
    (started above the largest existing id) never collides with an earlier one.
    """

    ACTIONS: tuple[tuple[str, float], ...] = (
        ("new_patient", 10), ("registration", 8), ("appointment", 4), ("appointment_cancel", 1),
        ("appointment_arrive", 2), ("registration_cancel", 1.5), ("visit", 9), ("fee_refund", 1),
        ("admission", 2), ("inpatient_orders", 4), ("order_stop", 2), ("inpatient_fees", 4),
        ("lab", 4), ("lab_correct", 0.6), ("exam", 2), ("exam_revise", 0.3), ("operation", 0.7),
        ("discharge", 1.6), ("patient_fix", 1.2), ("stock_in", 0.5), ("stock_out", 1), ("staff_change", 0.1),
    )

    def __init__(self, profile: Profile, *, seed: int = 1, start: datetime | None = None,
                 dirty: float = 0.0, id_start: int = 1,
                 limit: Callable[[], datetime] | None = None) -> None:
        if not 0.0 <= dirty <= 1.0:
            raise ValueError("dirty share must lie between 0 and 1")
        self.p = profile
        self.rng = random.Random(seed)
        self.now = start or datetime(2024, 3, 1, 7, 30)
        # The simulated clock runs faster than real time; against a live pipeline it must not pass
        # the real clock, or every record would be a "future event" to the conformance rules.
        # ``limit`` is that clock, read at every tick: once caught up, the simulated clock follows
        # it. A fixed limit would stamp every later change with the same past time, and a poller's
        # update-time cursor, already past those keys at that second, would never see them.
        self.limit = limit
        self.dirty_share = dirty
        self._dirty_owed = 0.0
        self.next_id = id_start
        self.stats = Stats()
        self.patients: list[dict[str, Any]] = []
        self.appointments: list[dict[str, Any]] = []
        self.waiting: list[dict[str, Any]] = []         # registrations not yet seen by a doctor
        self.visits: list[dict[str, Any]] = []
        self.out_fees: list[dict[str, Any]] = []
        self.inpatients: list[dict[str, Any]] = []
        self.active_orders: list[dict[str, Any]] = []
        self.labs: list[dict[str, Any]] = []
        self.exams: list[dict[str, Any]] = []
        self.free_beds: dict[str, list[str]] = {d: [f"{d[:2]}{n:02d}" for n in range(1, 21)]
                                                for d in INPATIENT_DEPTS}
        self.staff = staff_catalogue()
        self._weights = [w for _, w in self.ACTIONS]
        self._names = [a for a, _ in self.ACTIONS]

    # --- plumbing ------------------------------------------------------------------------------

    def _id(self) -> int:
        n = self.next_id
        self.next_id += 1
        return n

    def _ext(self, kind: str, n: int) -> Any:
        return self.p.ids[kind](n)

    def _insert(self, tx: Transaction, kind: str, entity: dict[str, Any]) -> None:
        spec = self.p.specs[kind]
        row = spec.render(entity)
        key = {k: row[k] for k in spec.key}
        spoil = None
        targets = self.p.dirty.get(spec.table)
        # The share counts over all inserted rows; only some tables have columns worth spoiling,
        # so the owed share accumulates until such a row comes by.
        self._dirty_owed += self.dirty_share
        if targets and self._dirty_owed > 0 and self.rng.random() < self._dirty_owed:
            self._dirty_owed -= 1
            column, how = targets[self.rng.randrange(len(targets))]
            spoil = how
            if how == "code":
                # An unknown code as long as the real one, so a CHAR(1) column still takes it.
                row[column] = "Z" * max(1, min(2, len(str(row.get(column) or "ZZ"))))
            elif how == "missing":
                row[column] = None
            else:
                row[column] = (date(2099, 1, 1) if isinstance(row[column], date)
                               and not isinstance(row[column], datetime) else datetime(1899, 12, 31, 8, 0))
            self.stats.dirty += 1
        tx.ops.append(Op("insert", spec.table, row, key, spoil))

    def _update(self, tx: Transaction, kind: str, entity: dict[str, Any], changed: set[str]) -> None:
        spec = self.p.specs[kind]
        values = spec.render(entity, only=changed)
        if values:
            tx.ops.append(Op("update", spec.table, values, spec.key_of(entity)))

    def _delete(self, tx: Transaction, kind: str, entity: dict[str, Any]) -> None:
        spec = self.p.specs[kind]
        tx.ops.append(Op("delete", spec.table, {}, spec.key_of(entity)))

    def _pick(self, items: list[dict[str, Any]]) -> dict[str, Any] | None:
        return items[self.rng.randrange(len(items))] if items else None

    def _doctor(self, dept: str) -> str:
        docs = [s["code"] for s in self.staff if s["dept"] == dept and s["staff_type"] == "DOCTOR"]
        return self.rng.choice(docs) if docs else self.staff[0]["code"]

    def _tick(self) -> None:
        # Busy in the day, quiet at night, like a hospital's HIS.
        hour = self.now.hour
        mean = 20 if 8 <= hour < 17 else 120
        self.now += timedelta(seconds=int(self.rng.expovariate(1 / mean)) + 1)
        if self.limit is not None:
            cap = self.limit()
            if self.now > cap:
                self.now = cap  # the real clock only moves forward: never backwards

    # --- the stream of transactions ------------------------------------------------------------

    def transactions(self) -> Iterator[Transaction]:
        """Endless transactions; each has at least one row change."""
        while True:
            self._tick()
            action = self.rng.choices(self._names, self._weights)[0]
            tx = Transaction(action)
            getattr(self, "_do_" + action)(tx)
            if not tx.ops:
                continue
            self.stats.transactions += 1
            self.stats.changes += len(tx.ops)
            self.stats.inserts += sum(1 for op in tx.ops if op.kind == "insert")
            self.stats.by_action[action] = self.stats.by_action.get(action, 0) + 1
            yield tx

    def take(self, changes: int) -> Iterator[Transaction]:
        """Transactions until at least ``changes`` row changes have been produced."""
        done = 0
        for tx in self.transactions():
            if done >= changes:
                return
            yield tx
            done += len(tx.ops)

    # --- actions -------------------------------------------------------------------------------

    def _new_patient_entity(self) -> dict[str, Any]:
        rng = self.rng
        n = self._id()
        sex = "M" if rng.random() < 0.5 else "F"
        age_days = rng.randint(30, 90 * 365)
        birth = (self.now - timedelta(days=age_days)).date()
        region, region_name = identity.REGIONS[rng.randrange(len(identity.REGIONS))]
        id_type = "ID" if rng.random() < 0.95 else rng.choice(("HOUSEHOLD", "PASSPORT", "OTHER"))
        id_no = identity.resident_id(rng, region, birth, sex) if id_type in ("ID", "HOUSEHOLD") else \
            f"E{rng.randrange(10**8):08d}"
        return {
            "pid": self._ext("patient", n), "card_no": self._ext("card_no", n), "name": identity.name(rng),
            "sex": sex, "birth": birth, "id_type": id_type, "id_no": id_no,
            "marital": "SINGLE" if age_days < 22 * 365 else rng.choice(("MARRIED", "MARRIED", "WIDOWED", "DIVORCED")),
            "nation": rng.choices(NEUTRAL["nation"], (90, 6, 2, 1, 1))[0],
            "occupation": "STUDENT" if age_days < 22 * 365 else "RETIRED" if age_days > 60 * 365 else
            rng.choice(NEUTRAL["occupation"][:5]),
            "phone": identity.mobile(rng), "address": identity.address(rng, region_name),
            "insurance": rng.choices(NEUTRAL["insurance"], (15, 40, 35, 8, 2))[0],
            "created": self.now, "modified": self.now, "void": 0, "times": 0,
        }

    def _register(self, tx: Transaction, patient: dict[str, Any], appointment: dict[str, Any] | None = None) -> None:
        emergency = appointment is None and self.rng.random() < 0.12
        dept = appointment["dept"] if appointment else "EM" if emergency else self.rng.choice(OUTPATIENT_DEPTS[:-1])
        reg_type = "EMERGENCY" if emergency else "EXPERT" if self.rng.random() < 0.25 else "GENERAL"
        reg = {
            "rid": self._id(), "pid": patient["pid"], "time": self.now, "reg_type": reg_type, "dept": dept,
            "doctor": appointment["doctor"] if appointment else self._doctor(dept),
            "reg_fee": money({"GENERAL": 1, "EXPERT": 5, "EMERGENCY": 2}[reg_type]),
            "diag_fee": money({"GENERAL": 10, "EXPERT": 30, "EMERGENCY": 15}[reg_type]),
            "insurance": patient["insurance"], "aid": appointment["aid"] if appointment else None,
            "cancelled": "F", "state": "WAIT", "modified": self.now, "patient": patient,
            "emergency": "T" if emergency else "F",
        }
        self._insert(tx, "registration", reg)
        self.waiting.append(reg)

    def _do_new_patient(self, tx: Transaction) -> None:
        patient = self._new_patient_entity()
        self.patients.append(patient)
        self._insert(tx, "patient", patient)
        self._register(tx, patient)

    def _do_registration(self, tx: Transaction) -> None:
        patient = self._pick(self.patients)
        if patient:
            self._register(tx, patient)

    def _do_appointment(self, tx: Transaction) -> None:
        patient = self._pick(self.patients)
        if not patient:
            return
        dept = self.rng.choice(OUTPATIENT_DEPTS[:-1])
        appt = {"aid": self._id(), "pid": patient["pid"], "date": (self.now + timedelta(days=self.rng.randint(0, 7))).date(),
                "slot": self.rng.choice(("AM", "PM")), "dept": dept, "doctor": self._doctor(dept),
                "channel": self.rng.choice(NEUTRAL["channel"]), "status": "BOOKED", "booked": self.now,
                "modified": self.now, "patient": patient}
        self._insert(tx, "appointment", appt)
        self.appointments.append(appt)

    def _do_appointment_cancel(self, tx: Transaction) -> None:
        appt = self._pick(self.appointments)
        if appt:
            self.appointments.remove(appt)
            appt.update(status="CANCELLED", modified=self.now)
            self._update(tx, "appointment", appt, {"status", "modified"})

    def _do_appointment_arrive(self, tx: Transaction) -> None:
        appt = self._pick(self.appointments)
        if appt:
            self.appointments.remove(appt)
            appt.update(status="ARRIVED", modified=self.now)
            self._update(tx, "appointment", appt, {"status", "modified"})
            self._register(tx, appt["patient"], appt)

    def _do_registration_cancel(self, tx: Transaction) -> None:
        reg = self._pick(self.waiting)
        if not reg:
            return
        self.waiting.remove(reg)
        if self.rng.random() < 0.2:
            # Some HIS builds remove a registration entered by mistake outright.
            self._delete(tx, "registration", reg)
        else:
            reg.update(cancelled="T", modified=self.now)
            self._update(tx, "registration", reg, {"cancelled", "modified"})

    def _do_visit(self, tx: Transaction) -> None:
        if not self.waiting:
            return
        reg = self.waiting.pop(0)
        patient = reg["patient"]
        rng = self.rng
        diag_code, diag_name = DIAGNOSES[rng.randrange(len(DIAGNOSES))]
        # The visit is written when the doctor closes it: an end past the simulated clock would be a
        # future event, and the clock is held at the real one when it catches up with it.
        start = max(reg["time"], self.now - timedelta(minutes=rng.randint(3, 25)))
        visit = {"vid": self._id(), "rid": reg["rid"], "pid": patient["pid"], "dept": reg["dept"],
                 "doctor": reg["doctor"], "start": start, "end": self.now,
                 "diag_code": diag_code, "diag_name": diag_name, "complaint": f"{diag_name}相关症状{rng.randint(1, 14)}天",
                 "illness": f"患者{rng.randint(1, 14)}天前无明显诱因出现不适，" + "自行服药效果不佳，今来我院就诊。" * rng.randint(1, 3),
                 "revisit": "T" if rng.random() < 0.3 else "F", "emergency": reg["emergency"],
                 "patient": patient, "visit_no": str(reg["rid"])}
        self._insert(tx, "visit", visit)
        reg.update(state="DONE", modified=self.now)
        self._update(tx, "registration", reg, {"state", "modified"})
        self.visits.append(visit)
        if len(self.visits) > 500:
            self.visits.pop(0)
        kind = rng.choices(("W", "P", "H", None), (55, 15, 10, 20))[0]
        if kind:
            self._prescribe(tx, visit, kind)
        if rng.random() < 0.35:
            order = {"oid": self._id(), "vid": visit["vid"], "pid": patient["pid"],
                     "order_class": rng.choice(("EXAM", "LAB", "TREAT")), "item": "F04", "content": "血常规",
                     "dose": None, "dose_unit": None, "route": None, "freq": "ST", "time": self.now,
                     "dept": visit["dept"], "doctor": visit["doctor"], "status": "NEW"}
            item = FEE_ITEMS[rng.choice((1, 3, 5, 6, 7))]
            order.update(item=self.p.codes["fee_item"][item[0]], content=item[1])
            self._insert(tx, "outpatient_order", order)
            self._fee(tx, visit, item)

    def _prescribe(self, tx: Transaction, visit: dict[str, Any], kind: str) -> None:
        rng = self.rng
        n = self._id()
        presc = {"prid": n, "presc_no": self._ext("presc_no", n), "vid": visit["vid"], "pid": visit["pid"],
                 "kind": kind, "time": self.now, "dept": visit["dept"], "doctor": visit["doctor"],
                 "doses": rng.randint(3, 7) if kind == "H" else None, "void": "F", "dispensed": 0}
        self._insert(tx, "prescription", presc)
        drugs = [d for d in DRUGS if d[4] == kind]
        for line, drug in enumerate(rng.sample(drugs, k=min(len(drugs), rng.randint(1, 4 if kind != "H" else 6))), 1):
            qty = Decimal(rng.choice((1, 2, 3))) if kind != "H" else Decimal(rng.choice((6, 9, 10, 12, 15, 30)))
            doses = Decimal(presc["doses"] or 1)
            price = Decimal(drug[5])
            self._insert(tx, "prescription_line", {
                "lid": self._id(), "prid": n, "presc_no": presc["presc_no"], "line": line, "kind": kind,
                "pid": visit["pid"], "drug": drug[0], "qty": qty.quantize(CENT), "price": price,
                "amount": money(qty * price * (doses if kind == "H" else 1)),
                "dose": Decimal(rng.choice(("0.250", "0.500", "1.000", "10.000"))),
                "dose_unit": "g" if kind == "H" else rng.choice(("g", "mg", "粒", "片", "ml")),
                "route": "ORAL" if kind != "W" or rng.random() < 0.7 else "IVGTT",
                "freq": rng.choice(("QD", "BID", "TID")), "days": rng.randint(3, 7),
                "note": "先煎" if kind == "H" and rng.random() < 0.15 else None})
            drug_item = ("", drug[1], {"W": "WM", "P": "CPM", "H": "CHM"}[kind], str(drug[5]))
            self._fee(tx, visit, drug_item, qty=qty * (doses if kind == "H" else 1), code=self.p.codes["drug"][drug[0]])

    def _fee(self, tx: Transaction, visit: dict[str, Any], item: tuple[str, str, str, str],
             qty: Decimal = Decimal(1), code: str | None = None) -> None:
        n = self._id()
        price = Decimal(item[3])
        amount = money(qty * price)
        self_share = Decimal("1") if visit["patient"]["insurance"] == "SELF" else Decimal("0.3")
        fee = {"fid": n, "invoice": self._ext("invoice", n), "pid": visit["pid"], "vid": visit["vid"],
               "item": item[0] or None, "item_name": item[1], "fee_class": item[2],
               "qty": qty.quantize(CENT), "price": price, "amount": amount, "self": money(amount * self_share),
               "time": self.now, "dept": visit["dept"], "refunded": "F"}
        self._insert(tx, "outpatient_fee", fee)
        if code is not None:
            # Drug lines carry the drug's code in the fee-item column, as HIS fee tables do.
            tx.ops[-1].values[self._item_column("outpatient_fee")] = code
        self.out_fees.append(fee)
        del self.out_fees[:-1000]

    def _item_column(self, kind: str) -> str:
        spec = self.p.specs[kind]
        return next(c for c, s in spec.columns.items() if isinstance(s, tuple) and s[0] == "item")

    def _do_fee_refund(self, tx: Transaction) -> None:
        fee = self._pick([f for f in self.out_fees if f["refunded"] == "F"])
        if not fee:
            return
        if self.rng.random() < 0.15:
            self.out_fees.remove(fee)
            self._delete(tx, "outpatient_fee", fee)
        else:
            fee["refunded"] = "T"
            self._update(tx, "outpatient_fee", fee, {"refunded"})

    def _do_admission(self, tx: Transaction) -> None:
        visit = self._pick(self.visits)
        if not visit:
            return
        dept = self.rng.choice(INPATIENT_DEPTS)
        if not self.free_beds[dept]:
            return
        patient = visit["patient"]
        if any(a["pid"] == patient["pid"] for a in self.inpatients):
            return
        bed = self.free_beds[dept].pop(0)
        n = self._id()
        patient["times"] = patient.get("times", 0) + 1
        adm = {"adm": self._ext("admission", n), "inpatient_no": self._ext("inpatient_no", n),
               "case_no": self._ext("case_no", n), "times": patient["times"], "pid": patient["pid"],
               "name": patient["name"], "sex": patient["sex"], "birth": patient["birth"], "id_no": patient["id_no"],
               "insurance": patient["insurance"],
               "route": "EMERGENCY" if visit["emergency"] == "T" else self.rng.choices(NEUTRAL["admit_route"], (10, 80, 8, 2))[0],
               "admit_time": self.now, "dept": dept, "bed": bed, "diag_code": visit["diag_code"],
               "diag_name": visit["diag_name"], "doctor": self._doctor(dept), "discharge_time": None,
               "discharge_dept": None, "discharge_way": None, "status": "IN", "modified": self.now,
               "patient": patient, "fees": {}, "op": None, "visit_no": None}
        adm["visit_no"] = adm["inpatient_no"]
        self._insert(tx, "admission", adm)
        self._update(tx, "bed", {"bed": bed, "dept": dept, "admission": adm["adm"], "state": "USED",
                                 "modified": self.now, "extra": 0}, {"admission", "state", "modified"})
        self.inpatients.append(adm)
        self._orders(tx, adm)

    def _orders(self, tx: Transaction, adm: dict[str, Any]) -> None:
        rng = self.rng
        for _ in range(rng.randint(1, 3)):
            drug = DRUGS[rng.randrange(12)]
            order = {"oid": self._id(), "adm": adm["adm"], "long_term": "T" if rng.random() < 0.6 else "F",
                     "order_class": "WM", "item": self.p.codes["drug"][drug[0]], "content": drug[1],
                     "dose": Decimal(rng.choice(("0.250", "0.500", "1.000", "250.000"))),
                     "dose_unit": rng.choice(("g", "ml", "mg")), "route": rng.choice(("ORAL", "IVGTT", "IM")),
                     "freq": rng.choice(("QD", "BID", "TID")), "start": self.now, "doctor": adm["doctor"],
                     "stop": None, "stop_doctor": None, "dept": adm["dept"], "status": "NEW"}
            self._insert(tx, "inpatient_order", order)
            if order["long_term"] == "T":
                self.active_orders.append(order)

    def _do_inpatient_orders(self, tx: Transaction) -> None:
        adm = self._pick(self.inpatients)
        if adm:
            self._orders(tx, adm)

    def _do_order_stop(self, tx: Transaction) -> None:
        order = self._pick(self.active_orders)
        if not order:
            return
        self.active_orders.remove(order)
        order.update(stop=self.now, stop_doctor=order["doctor"], status="STOP")
        self._update(tx, "inpatient_order", order, {"stop", "stop_doctor", "status"})

    def _in_fee(self, tx: Transaction, adm: dict[str, Any], item: tuple[str, str, str, str], qty: Decimal,
                code: str | None = None, oid: int | None = None) -> None:
        amount = money(qty * Decimal(item[3]))
        adm["fees"][item[2]] = adm["fees"].get(item[2], Decimal(0)) + amount
        self._insert(tx, "inpatient_fee", {
            "fid": self._id(), "adm": adm["adm"], "time": self.now,
            "item": item[0] or None, "item_name": item[1],
            "fee_class": item[2], "qty": qty.quantize(CENT), "price": Decimal(item[3]), "amount": amount,
            "self": money(amount * (Decimal(1) if adm["insurance"] == "SELF" else Decimal("0.2"))),
            "dept": adm["dept"], "oid": oid})
        if code is not None:
            tx.ops[-1].values[self._item_column("inpatient_fee")] = code

    def _do_inpatient_fees(self, tx: Transaction) -> None:
        adm = self._pick(self.inpatients)
        if not adm:
            return
        self._in_fee(tx, adm, FEE_ITEMS[8], Decimal(1))
        self._in_fee(tx, adm, FEE_ITEMS[9], Decimal(1))
        drug = DRUGS[self.rng.randrange(12)]
        self._in_fee(tx, adm, ("", drug[1], "WM", drug[5]), Decimal(self.rng.randint(1, 3)),
                     code=self.p.codes["drug"][drug[0]])
        if self.rng.random() < 0.3:
            # A charge entered twice is reversed with a negative line (红冲), never edited in place.
            self._in_fee(tx, adm, FEE_ITEMS[9], Decimal(-1))

    def _patient_for_result(self) -> tuple[dict[str, Any], str, str] | None:
        if self.inpatients and self.rng.random() < 0.5:
            adm = self._pick(self.inpatients)
            assert adm is not None
            return adm["patient"], "T", adm["visit_no"]
        visit = self._pick(self.visits)
        if visit is None:
            return None
        return visit["patient"], "F", visit["visit_no"]

    def _do_lab(self, tx: Transaction) -> None:
        who = self._patient_for_result()
        if not who:
            return
        patient, inpatient, visit_no = who
        n = self._id()
        sampled = self.now - timedelta(minutes=self.rng.randint(40, 180))
        items = LAB_ITEMS[:4] if self.rng.random() < 0.6 else LAB_ITEMS[4:8] if self.rng.random() < 0.8 else LAB_ITEMS[8:]
        dept = self.rng.choice(INPATIENT_DEPTS if inpatient == "T" else OUTPATIENT_DEPTS)
        for code, name, unit, low, high, specimen in items:
            value = round(self.rng.uniform(low * 0.7, high * 1.3), 2)
            flag = "H" if value > high else "L" if value < low else "N"
            lab = {"lid": self._id(), "report_no": self._ext("report_no", n), "apply_no": self._ext("apply_no", n),
                   "pid": patient["pid"], "inpatient": inpatient, "visit_no": visit_no, "item": code,
                   "item_name": name, "value": f"{value}", "unit": unit, "range": f"{low}-{high}", "flag": flag,
                   "specimen": specimen, "sampled": sampled, "reported": self.now,
                   "reported_tz": self.now.replace(tzinfo=SHANGHAI), "dept": dept,
                   "reviewer": self.rng.choice([s["code"] for s in self.staff if s["dept"] == "LAB"])}
            self._insert(tx, "lab_result", lab)
            self.labs.append(lab)
        del self.labs[:-300]

    def _do_lab_correct(self, tx: Transaction) -> None:
        lab = self._pick(self.labs)
        if lab:
            lab.update(value=f"{float(lab['value']) * 1.05:.2f}", reported=self.now,
                       reported_tz=self.now.replace(tzinfo=SHANGHAI))
            self._update(tx, "lab_result", lab, {"value", "reported", "reported_tz"})

    def _do_exam(self, tx: Transaction) -> None:
        who = self._patient_for_result()
        if not who:
            return
        patient, inpatient, visit_no = who
        modality, item, part, conclusion = EXAMS[self.rng.randrange(len(EXAMS))]
        n = self._id()
        exam = {"lid": n, "report_no": self._ext("exam_no", n), "apply_no": self._ext("apply_no", n),
                "pid": patient["pid"], "inpatient": inpatient, "visit_no": visit_no, "modality": modality,
                "item": item, "body_part": part, "examined": self.now - timedelta(minutes=self.rng.randint(20, 120)),
                "reported": self.now, "reported_tz": self.now.replace(tzinfo=SHANGHAI),
                "findings": f"{part}扫描所见：" + "结构清晰，形态大小未见明显异常，" * self.rng.randint(2, 6),
                "conclusion": conclusion, "dept": self.rng.choice(INPATIENT_DEPTS if inpatient == "T" else OUTPATIENT_DEPTS),
                "doctor": self.rng.choice([s["code"] for s in self.staff if s["dept"] in ("RAD", "US")]),
                "revised": "F"}
        self._insert(tx, "exam_report", exam)
        self.exams.append(exam)
        del self.exams[:-200]

    def _do_exam_revise(self, tx: Transaction) -> None:
        exam = self._pick(self.exams)
        if exam:
            exam.update(conclusion=exam["conclusion"] + "（修订：建议复查）", revised="T", reported=self.now,
                        reported_tz=self.now.replace(tzinfo=SHANGHAI))
            self._update(tx, "exam_report", exam, {"conclusion", "revised", "reported", "reported_tz"})

    def _do_operation(self, tx: Transaction) -> None:
        adm = self._pick([a for a in self.inpatients if a["op"] is None and a["dept"] in ("GSUR", "ORTH", "CARD", "OBGY")])
        if not adm:
            return
        code, name, level = OPERATIONS[self.rng.randrange(len(OPERATIONS))]
        start = self.now - timedelta(hours=self.rng.randint(1, 4))
        op = {"op_id": self._id(), "adm": adm["adm"], "pid": adm["pid"], "code": code, "name": name, "level": level,
              "anesthesia": self.rng.choice(NEUTRAL["anesthesia"]), "incision": self.rng.choice(("0", "I", "II", "III")),
              "start": start, "end": self.now, "surgeon": self._doctor(adm["dept"]), "dept": "OR", "status": "DONE"}
        adm["op"] = op
        self._insert(tx, "operation", op)
        self._in_fee(tx, adm, FEE_ITEMS[11] if code.startswith("47") else FEE_ITEMS[13], Decimal(1))

    def _do_discharge(self, tx: Transaction) -> None:
        adm = self._pick(self.inpatients)
        if not adm or (self.now - adm["admit_time"]) < timedelta(hours=6):
            return
        self.inpatients.remove(adm)
        self.active_orders = [o for o in self.active_orders if o["adm"] != adm["adm"]]
        way = self.rng.choices(NEUTRAL["discharge_way"], (85, 5, 3, 4, 1, 2))[0]
        adm.update(discharge_time=self.now, discharge_dept=adm["dept"], discharge_way=way, status="OUT",
                   modified=self.now)
        self._update(tx, "admission", adm, {"discharge_time", "discharge_dept", "discharge_way", "status", "modified"})
        self._update(tx, "bed", {"bed": adm["bed"], "dept": adm["dept"], "admission": None, "state": "FREE",
                                 "modified": self.now, "extra": 0}, {"admission", "state", "modified"})
        self.free_beds[adm["dept"]].append(adm["bed"])
        fees = adm["fees"]
        total = sum(fees.values(), Decimal(0))
        birth = adm["birth"]
        age = self.now.year - birth.year - ((self.now.month, self.now.day) < (birth.month, birth.day))
        days = max(1, (self.now.date() - adm["admit_time"].date()).days)
        op = adm["op"]
        other_diag = self.rng.sample(DIAGNOSES, 2)
        sheet = dict(adm, age=age, days=days, admit_condition=self.rng.choice(NEUTRAL["admit_condition"][:2]),
                     other_diag_1=other_diag[0][0], other_diag_2=other_diag[1][0] if self.rng.random() < 0.5 else None,
                     op_code=op["code"] if op else None, op_name=op["name"] if op else None,
                     total=money(total), self=money(total * Decimal("0.25")), archived="F", modified=self.now,
                     **{f"fee_{c}": money(fees.get(c, 0)) for c in ("WM", "CPM", "CHM", "EXAM", "LAB", "OPER", "MAT")},
                     fee_OTHER=money(sum((v for k, v in fees.items() if k in ("BED", "NURSE", "TREAT", "DIAG", "OTHER")),
                                         Decimal(0))))
        self._insert(tx, "front_sheet", sheet)

    def _do_patient_fix(self, tx: Transaction) -> None:
        patient = self._pick(self.patients)
        if not patient:
            return
        changed = {"modified"}
        if self.rng.random() < 0.6:
            patient["phone"] = identity.mobile(self.rng)
            changed.add("phone")
        else:
            region_name = identity.REGIONS[self.rng.randrange(len(identity.REGIONS))][1]
            patient["address"] = identity.address(self.rng, region_name)
            changed.add("address")
        patient["modified"] = self.now
        self._update(tx, "patient", patient, changed)

    def _do_stock_in(self, tx: Transaction) -> None:
        n = self._id()
        supplier = self.rng.choice(SUPPLIERS)
        for line, drug in enumerate(self.rng.sample(DRUGS, self.rng.randint(2, 6)), 1):
            qty = Decimal(self.rng.choice((50, 100, 200, 500)))
            retail = Decimal(drug[5])
            buy = (retail * Decimal("0.85")).quantize(Decimal("0.0001"))
            self._insert(tx, "stock_in", {
                "doc_no": self._ext("doc_no", n), "line": line, "time": self.now,
                "type": "PURCHASE" if self.rng.random() < 0.9 else "RETURN", "drug": drug[0],
                "batch": f"{self.now:%y%m}{self.rng.randint(100, 999)}",
                "expiry": (self.now + timedelta(days=self.rng.randint(300, 900))).date(), "qty": qty.quantize(CENT),
                "buy_price": buy, "buy_amount": money(qty * buy), "retail_price": retail, "supplier": supplier})

    def _do_stock_out(self, tx: Transaction) -> None:
        n = self._id()
        dept = self.rng.choice(INPATIENT_DEPTS + OUTPATIENT_DEPTS)
        for line, drug in enumerate(self.rng.sample(DRUGS[:15], self.rng.randint(1, 4)), 1):
            qty = Decimal(self.rng.randint(1, 40))
            retail = Decimal(drug[5])
            self._insert(tx, "stock_out", {
                "doc_no": self._ext("out_no", n), "line": line, "time": self.now,
                "type": self.rng.choices(NEUTRAL["stock_out"], (70, 28, 2))[0], "drug": drug[0],
                "batch": f"{self.now:%y%m}{self.rng.randint(100, 999)}", "qty": qty.quantize(CENT),
                "retail_price": retail, "retail_amount": money(qty * retail), "dept": dept})

    def _do_staff_change(self, tx: Transaction) -> None:
        member = self._pick([s for s in self.staff if s["title"] in ("ATTEND", "RESIDENT")])
        if member:
            member.update(title="ASSOC" if member["title"] == "ATTEND" else "ATTEND", modified=self.now)
            self._update(tx, "staff", member, {"title", "modified"})


# --- catalogue: departments, staff, drugs, fee items, beds, code dictionary ---------------------

def staff_catalogue() -> list[dict[str, Any]]:
    """The hospital's staff, the same for every run (seeded from a fixed number)."""
    rng = random.Random(20240301)
    staff: list[dict[str, Any]] = []
    n = 0
    for dept, _, kind, _ in DEPARTMENTS:
        count = {"O": 3, "I": 4, "M": 3, "A": 1}[kind]
        for i in range(count):
            n += 1
            sex = "M" if rng.random() < 0.45 else "F"
            birth = date(1960, 1, 1) + timedelta(days=rng.randint(0, 30 * 365))
            region, _ = identity.REGIONS[rng.randrange(len(identity.REGIONS))]
            staff_type = "DOCTOR" if kind in ("O", "I") and i < count - 1 else \
                "NURSE" if kind == "I" else "TECH" if dept in ("LAB", "RAD", "US") else \
                "PHARM" if dept == "PHAR" else "DOCTOR" if kind in ("O", "M") else "ADMIN"
            staff.append({"code": f"{n:04d}", "name": identity.name(rng), "sex": sex, "birth": birth,
                          "id_no": identity.resident_id(rng, region, birth, sex), "dept": dept,
                          "staff_type": staff_type,
                          "title": rng.choice(("CHIEF", "ASSOC", "ATTEND", "RESIDENT")) if staff_type == "DOCTOR"
                          else "NURSE" if staff_type == "NURSE" else "TECH",
                          "license": f"1102201{rng.randrange(10**8):08d}", "hired": birth + timedelta(days=24 * 365),
                          "void": 0, "modified": datetime(2024, 1, 1, 9, 0)})
    return staff


def seed_transactions(profile: Profile) -> list[Transaction]:
    """Rows a hospital's code tables hold before any patient arrives."""
    created = datetime(2020, 1, 1, 8, 0)
    txs: list[Transaction] = []

    def add(action: str, kind: str, entities: Iterable[dict[str, Any]]) -> None:
        spec = profile.specs[kind]
        tx = Transaction(action)
        for e in entities:
            row = spec.render(e)
            tx.ops.append(Op("insert", spec.table, row, {k: row[k] for k in spec.key}))
        txs.append(tx)

    code_tx = Transaction("code_dictionary")
    for kind, labels in CODE_LABELS.items():
        for neutral, label in labels.items():
            row = profile.code_table(kind, profile.codes[kind][neutral], label)
            table = "GY_DMZD" if profile.dialect == "mariadb" else "base_dict"
            code_tx.ops.append(Op("insert", table, row, {k: row[k] for k in list(row)[:2]}))
    txs.append(code_tx)
    add("departments", "dept", ({"dept": d, "name": name, "kind": kind, "parent": None, "pinyin": None,
                                  "beds": beds, "void": 0, "created": created, "modified": created}
                                 for d, name, kind, beds in DEPARTMENTS))
    add("staff", "staff", staff_catalogue())
    add("drugs", "drug", ({"drug": d, "name": name, "spec": spec, "unit": unit,
                           "form": "饮片" if kind == "H" else "片剂" if "片" in name else "胶囊" if "胶囊" in name else "其他",
                           "kind": kind, "maker": "吉林敖东药业集团股份有限公司" if kind == "P" else "修正药业集团股份有限公司",
                           "approval": f"国药准字H{22020000 + i}", "price": Decimal(price), "void": 0}
                          for i, (d, name, spec, unit, kind, price) in enumerate(DRUGS)))
    add("fee_items", "fee_item", ({"item": f, "name": name, "fee_class": cls, "price": Decimal(price),
                                   "unit": "次", "void": 0} for f, name, cls, price in FEE_ITEMS))
    workload = Workload(profile)
    add("beds", "bed", ({"bed": bed, "dept": dept, "admission": None, "extra": 0, "state": "FREE",
                         "modified": created} for dept, beds in workload.free_beds.items() for bed in beds))
    return txs


# --- executor ---------------------------------------------------------------------------------

def render_sql(profile: Profile, op: Op) -> tuple[str, list[Any]]:
    """SQL text and parameters of one row change (both drivers use the %s paramstyle)."""
    table = profile.qualified(op.table)
    if op.kind == "insert":
        cols = list(op.values)
        return (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                [op.values[c] for c in cols])
    where = " AND ".join(f"{k} = %s" for k in op.key)
    if op.kind == "update":
        sets = ", ".join(f"{c} = %s" for c in op.values)
        return f"UPDATE {table} SET {sets} WHERE {where}", [*op.values.values(), *op.key.values()]
    if op.kind == "delete":
        return f"DELETE FROM {table} WHERE {where}", list(op.key.values())
    raise ValueError(f"unknown operation {op.kind}")


def execute(conn: Any, profile: Profile, transactions: Iterable[Transaction], *, rate: float = 0.0,
            on_commit: Callable[[Transaction], None] | None = None) -> int:
    """Run transactions on a DB-API connection, one commit each, pacing to ``rate`` changes/s.

    Returns the number of row changes committed. A failing statement rolls its transaction back
    and propagates: the simulator must not silently skip what a hospital would have written.
    """
    started = _time.monotonic()
    done = 0
    for tx in transactions:
        cur = conn.cursor()
        try:
            for op in tx.ops:
                sql, params = render_sql(profile, op)
                cur.execute(sql, params)
            conn.commit()
        except Exception:
            conn.rollback()
            raise
        finally:
            cur.close()
        done += len(tx.ops)
        if on_commit:
            on_commit(tx)
        if rate > 0:
            ahead = done / rate - (_time.monotonic() - started)
            if ahead > 0:
                _time.sleep(ahead)
    return done


def id_columns(profile: Profile) -> list[tuple[str, str]]:
    """(table, column) of every key the workload's id counter feeds.

    Every single-column key but the code tables', and the document number of the stock documents'
    lines (keyed by document and line, with no table of their own for the document): a run that
    ended on a stock document left the counter above every single-column key, and the next run
    numbered a document again (a duplicate key in ``YF_CK01``).
    """
    out: list[tuple[str, str]] = []
    for spec in profile.specs.values():
        if len(spec.key) == 1 and spec.table not in ("GY_KSDM", "GY_YGDM", "YK_YPML", "GY_SFXM", "ZY_CWSZ",
                                                     "base_dept", "base_staff", "base_drug", "base_fee_item"):
            out.append((spec.table, spec.key[0]))
        elif spec.columns.get(spec.key[0]) == "doc_no":
            out.append((spec.table, spec.key[0]))
    return sorted(set(out))


def last_modified(conn: Any, profile: Profile) -> datetime | None:
    """The newest modification time any earlier run wrote (every table's "modified" column)."""
    newest: datetime | None = None
    cur = conn.cursor()
    try:
        for spec in profile.specs.values():
            column = next((c for c, src in spec.columns.items() if src == "modified"), None)
            if column is None:
                continue
            cur.execute(f"SELECT MAX({column}) FROM {profile.qualified(spec.table)}")
            value = cur.fetchone()[0]
            if isinstance(value, datetime) and (newest is None or value > newest):
                newest = value.replace(tzinfo=None)
    finally:
        cur.close()
    return newest


def next_free_id(conn: Any, profile: Profile) -> int:
    """One above the largest id any earlier run wrote (string ids end in the counter's digits)."""
    best = 0
    cur = conn.cursor()
    try:
        for table, column in id_columns(profile):
            cur.execute(f"SELECT MAX({column}) FROM {profile.qualified(table)}")
            value = cur.fetchone()[0]
            if value is None:
                continue
            digits = "".join(ch for ch in str(value) if ch.isdigit())
            best = max(best, int(digits or 0))
    finally:
        cur.close()
    return best + 1
