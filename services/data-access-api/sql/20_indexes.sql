-- Indexes for the joins cohort statistics make: person_id on every clinical
-- table and accession_id on image_occurrence (the subject count and the
-- modality chart look studies up by accession). Created after the bulk load.
CREATE INDEX IF NOT EXISTS idx_observation_period_person ON omop.observation_period (person_id);
CREATE INDEX IF NOT EXISTS idx_visit_person ON omop.visit_occurrence (person_id);
CREATE INDEX IF NOT EXISTS idx_condition_person ON omop.condition_occurrence (person_id);
CREATE INDEX IF NOT EXISTS idx_condition_concept ON omop.condition_occurrence (condition_concept_id);
CREATE INDEX IF NOT EXISTS idx_drug_person ON omop.drug_exposure (person_id);
CREATE INDEX IF NOT EXISTS idx_measurement_person ON omop.measurement (person_id);
CREATE INDEX IF NOT EXISTS idx_procedure_person ON omop.procedure_occurrence (person_id);
CREATE INDEX IF NOT EXISTS idx_image_person ON omop.image_occurrence (person_id);
CREATE INDEX IF NOT EXISTS idx_image_accession ON omop.image_occurrence (accession_id);
CREATE INDEX IF NOT EXISTS idx_image_procedure ON omop.image_occurrence (procedure_occurrence_id);
