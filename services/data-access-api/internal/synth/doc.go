// Package synth generates a synthetic OMOP CDM 5.4 population and loads it
// into a provisioned OMOP database: person, observation_period,
// visit_occurrence, condition_occurrence, drug_exposure, measurement,
// procedure_occurrence, death and the MI-CDM image_occurrence, plus the
// concept rows of every concept id used. Tests, the demo and the benchmarks
// use it; cmd/omop-synth is its command line.
//
// # Determinism and slices
//
// Every person's data comes from a random stream seeded by (seed,
// person_id) alone, and every row id derives from the person id (the k-th
// row of a person in a table has id person_id·100 + k). A population is
// person ids 1..Persons; a trust's slice keeps the persons with
// person_id % TrustCount == TrustIndex. So the same seed and slice always
// give identical rows, and the slices of a population are disjoint and
// together equal the whole.
//
// # Population
//
// Ages at ReferenceDate (2025-01-01) run from 0 to 95 with most persons
// between 50 and 80. Sex is about 49 % male (8507, "M"), 50.5 % female
// (8532, "F") and 0.5 % unknown (0, "U"); birth_datetime is always set.
// Each person has one observation period (up to 15 years, ending at death
// or ReferenceDate) and 1 to 6 visits (outpatient 9202, inpatient 9201,
// emergency 9203). Chronic conditions have prevalences that depend on age
// (and on BMI for type 2 diabetes, on sex for depression and osteoporosis);
// each is recorded once, at a visit, with the SNOMED code as source value.
// Drugs follow the conditions (metformin for diabetes, statins,
// ACE inhibitors, anticoagulants, ...). Every person has one BMI, one
// systolic and one diastolic blood pressure measurement at the first visit;
// HbA1c, eGFR, creatinine and cholesterol are measured where indicated. About
// 3 % die. About a third of persons have 1 to 3 imaging studies (CT 40 %,
// MR 25 %, XR 25 %, US 10 %), each an image_occurrence row linked to a
// procedure_occurrence row of the same id, with accession number
// "ACC" + the zero-padded 10-digit image_occurrence_id and Study Instance
// UID "1.2.826.0.1.3680043.8.498." + image_occurrence_id.
//
// Standard OHDSI concept ids are used for gender, visits, type, conditions,
// drugs, measurements and units. Modalities (concept_class_id "Modality",
// vocabulary "DICOM", concept_name and concept_code "CT", "MR", "XR", "US")
// and procedures have site-local ids above 2,000,000,000.
//
// # Planted signal
//
// Heart failure (condition 316139) is drawn from a logistic model of age,
// sex, type 2 diabetes, BMI and systolic blood pressure, documented on
// Signal, so that a model trained on the data can be checked against the
// known coefficients.
//
// # Loading
//
// Load streams every table through its own binary COPY, concurrently, from
// one generator that never holds more than a few batches of rows. The
// secondary indexes of sql/20_indexes.sql are dropped for the load and
// rebuilt after it, then the tables are analysed, so the database may be
// provisioned with or without indexes.
package synth
