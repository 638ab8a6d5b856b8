-- OMOP CDM 5.4 tables that cohort queries and data-access-api read, plus the
-- MI-CDM image_occurrence extension. Column names and types follow the CDM 5.4
-- PostgreSQL DDL; tables the node never reads are left out.
CREATE SCHEMA IF NOT EXISTS omop;

CREATE TABLE IF NOT EXISTS omop.concept (
	concept_id integer NOT NULL PRIMARY KEY,
	concept_name varchar(255) NOT NULL,
	domain_id varchar(20) NOT NULL,
	vocabulary_id varchar(20) NOT NULL,
	concept_class_id varchar(20) NOT NULL,
	standard_concept varchar(1) NULL,
	concept_code varchar(50) NOT NULL,
	valid_start_date date NOT NULL,
	valid_end_date date NOT NULL,
	invalid_reason varchar(1) NULL
);

CREATE TABLE IF NOT EXISTS omop.concept_ancestor (
	ancestor_concept_id integer NOT NULL,
	descendant_concept_id integer NOT NULL,
	min_levels_of_separation integer NOT NULL,
	max_levels_of_separation integer NOT NULL
);

CREATE TABLE IF NOT EXISTS omop.person (
	person_id integer NOT NULL PRIMARY KEY,
	gender_concept_id integer NOT NULL,
	year_of_birth integer NOT NULL,
	month_of_birth integer NULL,
	day_of_birth integer NULL,
	birth_datetime timestamp NULL,
	race_concept_id integer NOT NULL,
	ethnicity_concept_id integer NOT NULL,
	location_id integer NULL,
	provider_id integer NULL,
	care_site_id integer NULL,
	person_source_value varchar(50) NULL,
	gender_source_value varchar(50) NULL,
	gender_source_concept_id integer NULL,
	race_source_value varchar(50) NULL,
	race_source_concept_id integer NULL,
	ethnicity_source_value varchar(50) NULL,
	ethnicity_source_concept_id integer NULL
);

CREATE TABLE IF NOT EXISTS omop.observation_period (
	observation_period_id integer NOT NULL PRIMARY KEY,
	person_id integer NOT NULL,
	observation_period_start_date date NOT NULL,
	observation_period_end_date date NOT NULL,
	period_type_concept_id integer NOT NULL
);

CREATE TABLE IF NOT EXISTS omop.visit_occurrence (
	visit_occurrence_id integer NOT NULL PRIMARY KEY,
	person_id integer NOT NULL,
	visit_concept_id integer NOT NULL,
	visit_start_date date NOT NULL,
	visit_start_datetime timestamp NULL,
	visit_end_date date NOT NULL,
	visit_end_datetime timestamp NULL,
	visit_type_concept_id integer NOT NULL,
	provider_id integer NULL,
	care_site_id integer NULL,
	visit_source_value varchar(50) NULL,
	visit_source_concept_id integer NULL,
	admitted_from_concept_id integer NULL,
	admitted_from_source_value varchar(50) NULL,
	discharged_to_concept_id integer NULL,
	discharged_to_source_value varchar(50) NULL,
	preceding_visit_occurrence_id integer NULL
);

CREATE TABLE IF NOT EXISTS omop.condition_occurrence (
	condition_occurrence_id integer NOT NULL PRIMARY KEY,
	person_id integer NOT NULL,
	condition_concept_id integer NOT NULL,
	condition_start_date date NOT NULL,
	condition_start_datetime timestamp NULL,
	condition_end_date date NULL,
	condition_end_datetime timestamp NULL,
	condition_type_concept_id integer NOT NULL,
	condition_status_concept_id integer NULL,
	stop_reason varchar(20) NULL,
	provider_id integer NULL,
	visit_occurrence_id integer NULL,
	visit_detail_id integer NULL,
	condition_source_value varchar(50) NULL,
	condition_source_concept_id integer NULL,
	condition_status_source_value varchar(50) NULL
);

CREATE TABLE IF NOT EXISTS omop.drug_exposure (
	drug_exposure_id integer NOT NULL PRIMARY KEY,
	person_id integer NOT NULL,
	drug_concept_id integer NOT NULL,
	drug_exposure_start_date date NOT NULL,
	drug_exposure_start_datetime timestamp NULL,
	drug_exposure_end_date date NOT NULL,
	drug_exposure_end_datetime timestamp NULL,
	verbatim_end_date date NULL,
	drug_type_concept_id integer NOT NULL,
	stop_reason varchar(20) NULL,
	refills integer NULL,
	quantity numeric NULL,
	days_supply integer NULL,
	sig text NULL,
	route_concept_id integer NULL,
	lot_number varchar(50) NULL,
	provider_id integer NULL,
	visit_occurrence_id integer NULL,
	visit_detail_id integer NULL,
	drug_source_value varchar(50) NULL,
	drug_source_concept_id integer NULL,
	route_source_value varchar(50) NULL,
	dose_unit_source_value varchar(50) NULL
);

CREATE TABLE IF NOT EXISTS omop.measurement (
	measurement_id integer NOT NULL PRIMARY KEY,
	person_id integer NOT NULL,
	measurement_concept_id integer NOT NULL,
	measurement_date date NOT NULL,
	measurement_datetime timestamp NULL,
	measurement_time varchar(10) NULL,
	measurement_type_concept_id integer NOT NULL,
	operator_concept_id integer NULL,
	value_as_number numeric NULL,
	value_as_concept_id integer NULL,
	unit_concept_id integer NULL,
	range_low numeric NULL,
	range_high numeric NULL,
	provider_id integer NULL,
	visit_occurrence_id integer NULL,
	visit_detail_id integer NULL,
	measurement_source_value varchar(50) NULL,
	measurement_source_concept_id integer NULL,
	unit_source_value varchar(50) NULL,
	unit_source_concept_id integer NULL,
	value_source_value varchar(50) NULL,
	measurement_event_id bigint NULL,
	meas_event_field_concept_id integer NULL
);

CREATE TABLE IF NOT EXISTS omop.procedure_occurrence (
	procedure_occurrence_id integer NOT NULL PRIMARY KEY,
	person_id integer NOT NULL,
	procedure_concept_id integer NOT NULL,
	procedure_date date NOT NULL,
	procedure_datetime timestamp NULL,
	procedure_end_date date NULL,
	procedure_end_datetime timestamp NULL,
	procedure_type_concept_id integer NOT NULL,
	modifier_concept_id integer NULL,
	quantity integer NULL,
	provider_id integer NULL,
	visit_occurrence_id integer NULL,
	visit_detail_id integer NULL,
	procedure_source_value varchar(50) NULL,
	procedure_source_concept_id integer NULL,
	modifier_source_value varchar(50) NULL
);

CREATE TABLE IF NOT EXISTS omop.death (
	person_id integer NOT NULL PRIMARY KEY,
	death_date date NOT NULL,
	death_datetime timestamp NULL,
	death_type_concept_id integer NULL,
	cause_concept_id integer NULL,
	cause_source_value varchar(50) NULL,
	cause_source_concept_id integer NULL
);

-- MI-CDM imaging extension.
CREATE TABLE IF NOT EXISTS omop.image_occurrence (
	image_occurrence_id integer NOT NULL PRIMARY KEY,
	person_id integer NOT NULL,
	procedure_occurrence_id integer NULL,
	visit_occurrence_id integer NULL,
	anatomic_site_concept_id integer NULL,
	wadors_uri varchar(255) NULL,
	local_path varchar(255) NULL,
	image_occurrence_date date NOT NULL,
	image_study_uid varchar(255) NOT NULL,
	image_series_uid varchar(255) NULL,
	modality_concept_id integer NOT NULL,
	accession_id varchar(50) NULL
);

-- CDM results table; cohort SQL that names an unqualified "cohort" reads it.
CREATE TABLE IF NOT EXISTS omop.cohort (
	cohort_definition_id integer NOT NULL,
	subject_id integer NOT NULL,
	cohort_start_date date NOT NULL,
	cohort_end_date date NOT NULL
);
