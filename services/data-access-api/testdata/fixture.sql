-- A small OMOP cohort whose statistics are worked out by hand in the tests.
-- Ages are fixed relative to the current date so expectations never drift.
--   persons 1-6   M, imaging: 2 CT studies each        (12 CT)
--   persons 7-10  F, imaging: 2 MR studies each        (8 MR)
--   persons 11-12 F, imaging: 2 XR studies each        (4 XR)
--   persons 13,15 M and 14,16 F: no imaging
--   ages: 1-3 -> 25, 4-6 -> 35, 7-9 -> 45, 10-12 -> 55, 13-16 -> 65
--   type 2 diabetes (201826): persons 1-10; hypertension (320128): persons 5-16
INSERT INTO omop.concept VALUES
 (8507, 'MALE', 'Gender', 'Gender', 'Gender', 'S', 'M', '1970-01-01', '2099-12-31', NULL),
 (8532, 'FEMALE', 'Gender', 'Gender', 'Gender', 'S', 'F', '1970-01-01', '2099-12-31', NULL),
 (2000001, 'CT', 'Observation', 'DICOM', 'Modality', 'S', 'CT', '1970-01-01', '2099-12-31', NULL),
 (2000002, 'MR', 'Observation', 'DICOM', 'Modality', 'S', 'MR', '1970-01-01', '2099-12-31', NULL),
 (2000003, 'XR', 'Observation', 'DICOM', 'Modality', 'S', 'XR', '1970-01-01', '2099-12-31', NULL),
 (201826, 'Type 2 diabetes mellitus', 'Condition', 'SNOMED', 'Clinical Finding', 'S', '44054006', '1970-01-01', '2099-12-31', NULL),
 (320128, 'Essential hypertension', 'Condition', 'SNOMED', 'Clinical Finding', 'S', '59621000', '1970-01-01', '2099-12-31', NULL);

INSERT INTO omop.person (person_id, gender_concept_id, year_of_birth, birth_datetime, race_concept_id, ethnicity_concept_id, gender_source_value)
SELECT id,
       CASE WHEN id <= 6 OR id IN (13, 15) THEN 8507 ELSE 8532 END,
       extract(year FROM b)::int, b, 0, 0,
       CASE WHEN id <= 6 OR id IN (13, 15) THEN 'M' ELSE 'F' END
FROM (SELECT id, (current_date - make_interval(years => CASE WHEN id <= 3 THEN 25 WHEN id <= 6 THEN 35 WHEN id <= 9 THEN 45
                                                         WHEN id <= 12 THEN 55 ELSE 65 END) - interval '40 days')::timestamp AS b
      FROM generate_series(1, 16) AS id) s;

INSERT INTO omop.image_occurrence (image_occurrence_id, person_id, image_occurrence_date, image_study_uid, modality_concept_id, accession_id)
SELECT n, (n + 1) / 2, current_date - 30, '1.2.826.0.1.3680043.8.498.' || n,
       CASE WHEN n <= 12 THEN 2000001 WHEN n <= 20 THEN 2000002 ELSE 2000003 END,
       'ACC-' || (1000 + n)
FROM generate_series(1, 24) AS n;

INSERT INTO omop.condition_occurrence (condition_occurrence_id, person_id, condition_concept_id, condition_start_date, condition_type_concept_id)
SELECT id, id, 201826, current_date - 400, 32817 FROM generate_series(1, 10) AS id
UNION ALL
SELECT 100 + id, id, 320128, current_date - 300, 32817 FROM generate_series(5, 16) AS id;

ANALYZE;
