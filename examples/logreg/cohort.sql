-- One row per person with the features of the built-in logistic-regression
-- job: age in completed years at the data's extract date, sex (8507 male),
-- type 2 diabetes (condition 201826), BMI (measurement 3038553), systolic
-- blood pressure (measurement 3004249), and the outcome, heart failure
-- (condition 316139). Several BMI or systolic measurements are averaged; a
-- person without one gets an empty value, and the job skips the row.
SELECT p.person_id,
       CAST(DATE_PART('year', AGE(DATE '2025-01-01', p.birth_datetime)) AS integer) AS age,
       CASE WHEN p.gender_concept_id = 8507 THEN 1 ELSE 0 END AS male,
       COALESCE(c.t2d, 0) AS t2d,
       m.bmi,
       m.sbp,
       COALESCE(c.outcome, 0) AS outcome
FROM person p
LEFT JOIN (
    SELECT person_id,
           MAX(CASE WHEN condition_concept_id = 201826 THEN 1 ELSE 0 END) AS t2d,
           MAX(CASE WHEN condition_concept_id = 316139 THEN 1 ELSE 0 END) AS outcome
    FROM condition_occurrence
    WHERE condition_concept_id IN (201826, 316139)
    GROUP BY person_id
) c ON c.person_id = p.person_id
LEFT JOIN (
    SELECT person_id,
           ROUND(AVG(CASE WHEN measurement_concept_id = 3038553 THEN value_as_number END), 1) AS bmi,
           ROUND(AVG(CASE WHEN measurement_concept_id = 3004249 THEN value_as_number END), 1) AS sbp
    FROM measurement
    WHERE measurement_concept_id IN (3038553, 3004249)
    GROUP BY person_id
) m ON m.person_id = p.person_id
ORDER BY p.person_id
