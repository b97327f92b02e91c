-- Vendor B HIS (English snake case), PostgreSQL 15.
-- Applied inside one database per simulated hospital, schema "his". Times are local wall-clock
-- (Asia/Shanghai) in "timestamp without time zone", except medic_result.report_time which the
-- reporting module writes as timestamptz. Money is numeric. Every table has a primary key; the
-- replica identity stays DEFAULT (updates and deletes carry only the key in their before-image),
-- as a hospital DBA would leave it.
-- One column per line: streams/core/source.py reads this file as the source description.

CREATE SCHEMA IF NOT EXISTS his;

CREATE TABLE his.base_dict (
  dict_type varchar(32) NOT NULL,
  code varchar(32) NOT NULL,
  name varchar(100),
  is_valid boolean DEFAULT true,
  PRIMARY KEY (dict_type, code)
);

CREATE TABLE his.base_dept (
  dept_code varchar(16) NOT NULL,
  dept_name varchar(64),
  dept_type varchar(8),
  parent_code varchar(16),
  bed_count integer,
  is_valid boolean DEFAULT true,
  created_at timestamp,
  updated_at timestamp,
  PRIMARY KEY (dept_code)
);

CREATE TABLE his.base_staff (
  staff_id varchar(16) NOT NULL,
  staff_name varchar(32),
  gender varchar(2),
  birth_date date,
  id_card varchar(18),
  dept_code varchar(16),
  staff_type varchar(8),
  title_code varchar(8),
  license_no varchar(32),
  hire_date date,
  is_valid boolean DEFAULT true,
  updated_at timestamp,
  PRIMARY KEY (staff_id)
);

CREATE TABLE his.base_drug (
  drug_code varchar(20) NOT NULL,
  drug_name varchar(100),
  spec varchar(50),
  unit varchar(10),
  dosage_form varchar(8),
  drug_kind varchar(4),
  manufacturer varchar(100),
  approval_no varchar(50),
  retail_price numeric(12,4),
  is_valid boolean DEFAULT true,
  PRIMARY KEY (drug_code)
);

CREATE TABLE his.base_fee_item (
  item_code varchar(20) NOT NULL,
  item_name varchar(100),
  fee_class varchar(8),
  price numeric(12,4),
  unit varchar(10),
  is_valid boolean DEFAULT true,
  PRIMARY KEY (item_code)
);

CREATE TABLE his.pat_info (
  pat_id varchar(20) NOT NULL,
  card_no varchar(20),
  name varchar(50),
  gender_code varchar(2),
  birth_date date,
  id_type varchar(4),
  id_no varchar(20),
  marital_code varchar(2),
  nation_code varchar(4),
  occupation varchar(8),
  phone varchar(20),
  address varchar(200),
  insurance_type varchar(8),
  created_at timestamp,
  updated_at timestamp,
  PRIMARY KEY (pat_id)
);

CREATE TABLE his.outpt_appointment (
  appt_id bigint NOT NULL,
  pat_id varchar(20),
  dept_code varchar(16),
  doctor_id varchar(16),
  appt_date date,
  time_slot varchar(4),
  channel varchar(8),
  appt_status varchar(12),
  booked_at timestamp,
  updated_at timestamp,
  PRIMARY KEY (appt_id)
);

CREATE TABLE his.outpt_register (
  reg_id bigint NOT NULL,
  pat_id varchar(20),
  reg_time timestamp,
  reg_type varchar(8),
  dept_code varchar(16),
  doctor_id varchar(16),
  reg_fee numeric(10,2),
  diag_fee numeric(10,2),
  insurance_type varchar(8),
  appt_id bigint,
  status varchar(12),
  updated_at timestamp,
  PRIMARY KEY (reg_id)
);

CREATE TABLE his.outpt_visit (
  visit_id bigint NOT NULL,
  reg_id bigint,
  pat_id varchar(20),
  visit_type varchar(4),
  dept_code varchar(16),
  doctor_id varchar(16),
  visit_time timestamp,
  end_time timestamp,
  diag_code varchar(20),
  diag_name varchar(100),
  chief_complaint varchar(200),
  present_illness text,
  is_revisit boolean,
  PRIMARY KEY (visit_id)
);

CREATE TABLE his.outpt_prescribe (
  presc_no varchar(20) NOT NULL,
  visit_id bigint,
  pat_id varchar(20),
  presc_type varchar(4),
  presc_time timestamp,
  dept_code varchar(16),
  doctor_id varchar(16),
  herb_doses integer,
  status varchar(8),
  PRIMARY KEY (presc_no)
);

CREATE TABLE his.outpt_prescribe_detail (
  presc_no varchar(20) NOT NULL,
  line_no integer NOT NULL,
  presc_type varchar(4),
  pat_id varchar(20),
  drug_code varchar(20),
  qty numeric(10,2),
  unit_price numeric(12,4),
  amount numeric(12,2),
  dose numeric(10,3),
  dose_unit varchar(10),
  route_code varchar(8),
  freq_code varchar(8),
  days integer,
  decoction varchar(20),
  PRIMARY KEY (presc_no, line_no)
);

CREATE TABLE his.outpt_order (
  order_id bigint NOT NULL,
  visit_id bigint,
  pat_id varchar(20),
  order_class varchar(8),
  item_code varchar(20),
  item_name varchar(100),
  dose numeric(10,3),
  dose_unit varchar(10),
  route_code varchar(8),
  freq_code varchar(8),
  order_time timestamp,
  dept_code varchar(16),
  doctor_id varchar(16),
  status varchar(8),
  PRIMARY KEY (order_id)
);

CREATE TABLE his.outpt_cost (
  cost_id bigint NOT NULL,
  invoice_no varchar(20),
  pat_id varchar(20),
  visit_id bigint,
  item_code varchar(20),
  item_name varchar(100),
  fee_class varchar(8),
  qty numeric(10,2),
  price numeric(12,4),
  amount numeric(12,2),
  self_amount numeric(12,2),
  charge_time timestamp,
  dept_code varchar(16),
  status varchar(8),
  PRIMARY KEY (cost_id)
);

CREATE TABLE his.inpt_visit (
  inpt_id varchar(20) NOT NULL,
  pat_id varchar(20),
  inpt_no varchar(20),
  case_no varchar(20),
  inpt_times integer,
  name varchar(50),
  gender_code varchar(2),
  birth_date date,
  id_no varchar(20),
  insurance_type varchar(8),
  admit_route varchar(8),
  admit_time timestamp,
  admit_dept varchar(16),
  ward_code varchar(16),
  bed_no varchar(16),
  admit_diag varchar(20),
  attending_doctor varchar(16),
  discharge_time timestamp,
  discharge_dept varchar(16),
  discharge_way varchar(16),
  status varchar(8),
  updated_at timestamp,
  PRIMARY KEY (inpt_id)
);

CREATE TABLE his.inpt_bed (
  ward_code varchar(16) NOT NULL,
  bed_no varchar(16) NOT NULL,
  dept_code varchar(16),
  inpt_id varchar(20),
  is_extra boolean DEFAULT false,
  bed_status varchar(8),
  updated_at timestamp,
  PRIMARY KEY (ward_code, bed_no)
);

CREATE TABLE his.inpt_advice (
  advice_id bigint NOT NULL,
  inpt_id varchar(20),
  advice_kind varchar(2),
  item_class varchar(8),
  item_code varchar(20),
  advice_content varchar(200),
  dose numeric(10,3),
  dose_unit varchar(10),
  route_code varchar(8),
  freq_code varchar(8),
  start_time timestamp,
  doctor_id varchar(16),
  stop_time timestamp,
  stop_doctor varchar(16),
  dept_code varchar(16),
  status varchar(8),
  PRIMARY KEY (advice_id)
);

CREATE TABLE his.inpt_cost (
  cost_id bigint NOT NULL,
  inpt_id varchar(20),
  charge_time timestamp,
  item_code varchar(20),
  item_name varchar(100),
  fee_class varchar(8),
  qty numeric(10,2),
  price numeric(12,4),
  amount numeric(12,2),
  self_amount numeric(12,2),
  dept_code varchar(16),
  advice_id bigint,
  PRIMARY KEY (cost_id)
);

CREATE TABLE his.mr_homepage (
  inpt_id varchar(20) NOT NULL,
  case_no varchar(20),
  inpt_times integer,
  name varchar(50),
  gender_code varchar(2),
  birth_date date,
  age integer,
  id_no varchar(20),
  pay_way varchar(8),
  admit_route varchar(8),
  admit_time timestamp,
  admit_dept varchar(16),
  discharge_time timestamp,
  discharge_dept varchar(16),
  inpt_days integer,
  main_diag_code varchar(20),
  main_diag_name varchar(100),
  admit_condition varchar(4),
  other_diag_1 varchar(20),
  other_diag_2 varchar(20),
  oper_code varchar(20),
  oper_name varchar(100),
  discharge_way varchar(16),
  total_fee numeric(12,2),
  self_fee numeric(12,2),
  western_drug_fee numeric(12,2),
  patent_drug_fee numeric(12,2),
  herbal_fee numeric(12,2),
  exam_fee numeric(12,2),
  lab_fee numeric(12,2),
  oper_fee numeric(12,2),
  material_fee numeric(12,2),
  other_fee numeric(12,2),
  archived boolean DEFAULT false,
  updated_at timestamp,
  PRIMARY KEY (inpt_id)
);

CREATE TABLE his.medic_apply (
  apply_no varchar(20) NOT NULL,
  pat_id varchar(20),
  visit_type varchar(2),
  visit_no varchar(20),
  apply_type varchar(8),
  item_code varchar(20),
  item_name varchar(100),
  specimen varchar(8),
  apply_time timestamp,
  apply_dept varchar(16),
  apply_doctor varchar(16),
  exec_dept varchar(16),
  status varchar(8),
  PRIMARY KEY (apply_no)
);

CREATE TABLE his.medic_result (
  result_id bigint NOT NULL,
  apply_no varchar(20),
  report_no varchar(20),
  pat_id varchar(20),
  visit_type varchar(2),
  visit_no varchar(20),
  result_type varchar(8),
  item_code varchar(20),
  item_name varchar(100),
  result_value varchar(100),
  unit varchar(20),
  ref_range varchar(50),
  abnormal_flag varchar(2),
  specimen varchar(8),
  body_part varchar(50),
  exam_findings text,
  exam_conclusion text,
  sample_time timestamp,
  report_time timestamptz,
  apply_dept varchar(16),
  reporter varchar(16),
  PRIMARY KEY (result_id)
);

CREATE TABLE his.oper_info_record (
  oper_id bigint NOT NULL,
  inpt_id varchar(20),
  pat_id varchar(20),
  oper_code varchar(20),
  oper_name varchar(100),
  oper_level varchar(4),
  anes_method varchar(8),
  incision_class varchar(4),
  start_time timestamp,
  end_time timestamp,
  surgeon_id varchar(16),
  oper_dept varchar(16),
  status varchar(8),
  PRIMARY KEY (oper_id)
);

CREATE TABLE his.phar_in_receive_detail (
  receive_no varchar(20) NOT NULL,
  line_no integer NOT NULL,
  receive_time timestamp,
  in_type varchar(8),
  drug_code varchar(20),
  batch_no varchar(20),
  expire_date date,
  qty numeric(12,2),
  buy_price numeric(12,4),
  buy_amount numeric(14,2),
  retail_price numeric(12,4),
  supplier varchar(100),
  PRIMARY KEY (receive_no, line_no)
);

CREATE TABLE his.phar_out_detail (
  out_no varchar(20) NOT NULL,
  line_no integer NOT NULL,
  out_time timestamp,
  out_type varchar(8),
  drug_code varchar(20),
  batch_no varchar(20),
  qty numeric(12,2),
  retail_price numeric(12,4),
  retail_amount numeric(14,2),
  target_dept varchar(16),
  PRIMARY KEY (out_no, line_no)
);
