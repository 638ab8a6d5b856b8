package synth

// Concept is one omop.concept row the generator writes.
type Concept struct {
	ID         int32  // concept_id
	Name       string // concept_name
	Domain     string // domain_id
	Vocabulary string // vocabulary_id
	Class      string // concept_class_id
	Standard   bool   // standard_concept 'S' when true, else NULL
	Code       string // concept_code
}

// Concept ids the generated rows use. Clinical concepts carry their OHDSI
// standard vocabulary ids (SNOMED, RxNorm, LOINC, UCUM, Gender, Visit, Type
// Concept). Imaging modalities and procedures use ids from the range OMOP
// reserves for site-local concepts (above 2,000,000,000, still within a
// PostgreSQL integer).
const (
	ConceptNoMatch = 0

	ConceptMale   = 8507
	ConceptFemale = 8532

	ConceptInpatient  = 9201
	ConceptOutpatient = 9202
	ConceptEmergency  = 9203

	// ConceptEHR is the type concept of every generated row.
	ConceptEHR = 32817

	ConceptHypertension   = 320128
	ConceptType2Diabetes  = 201826
	ConceptAsthma         = 317009
	ConceptCOPD           = 255573
	ConceptCKD            = 46271022
	ConceptAtrialFib      = 313217
	ConceptDepression     = 440383
	ConceptObesity        = 433736
	ConceptHeartFailure   = 316139
	ConceptMI             = 4329847
	ConceptHyperlipidemia = 432867
	ConceptOsteoarthritis = 80180
	ConceptStroke         = 381316
	ConceptOsteoporosis   = 80502

	ConceptMetformin    = 1503297
	ConceptAtorvastatin = 1545958
	ConceptSimvastatin  = 1539403
	ConceptLisinopril   = 1308216
	ConceptRamipril     = 1334456
	ConceptAmlodipine   = 1332418
	ConceptBisoprolol   = 1338005
	ConceptWarfarin     = 1310149
	ConceptApixaban     = 43013024
	ConceptAlbuterol    = 1154343
	ConceptSertraline   = 739138

	ConceptBMI         = 3038553
	ConceptHbA1c       = 3004410
	ConceptSystolicBP  = 3004249
	ConceptDiastolicBP = 3012888
	ConceptEGFR        = 3049187
	ConceptCholesterol = 3027114
	ConceptCreatinine  = 3016723

	UnitKgPerM2 = 9531
	UnitMmHg    = 8876
	UnitPercent = 8554
	UnitEGFR    = 8795
	UnitMgPerDL = 8840

	ConceptModaCT = 2000000101
	ConceptModaMR = 2000000102
	ConceptModaXR = 2000000103
	ConceptModaUS = 2000000104

	ConceptCTChest     = 2000000201
	ConceptCTHead      = 2000000202
	ConceptCTAbdomen   = 2000000203
	ConceptMRBrain     = 2000000211
	ConceptMRSpine     = 2000000212
	ConceptMRKnee      = 2000000213
	ConceptXRChest     = 2000000221
	ConceptXRKnee      = 2000000222
	ConceptUSAbdomen   = 2000000231
	ConceptECG         = 2000000301
	ConceptEcho        = 2000000302
	ConceptSpirometry  = 2000000303
	ConceptColonoscopy = 2000000304
	ConceptCataract    = 2000000305
	ConceptHipReplace  = 2000000306
)

const (
	localVocabulary     = "FLIP Synthetic"
	modalityVocabulary  = "DICOM"
	modalityConceptKind = "Modality"
)

// Concepts are the concept rows for every concept id the generator uses.
// Load inserts them with ON CONFLICT DO NOTHING, so a database that already
// holds a vocabulary keeps its own rows.
var Concepts = []Concept{
	{ConceptNoMatch, "No matching concept", "Metadata", "None", "Undefined", false, "No matching concept"},

	{ConceptMale, "MALE", "Gender", "Gender", "Gender", true, "M"},
	{ConceptFemale, "FEMALE", "Gender", "Gender", "Gender", true, "F"},

	{ConceptInpatient, "Inpatient Visit", "Visit", "Visit", "Visit", true, "IP"},
	{ConceptOutpatient, "Outpatient Visit", "Visit", "Visit", "Visit", true, "OP"},
	{ConceptEmergency, "Emergency Room Visit", "Visit", "Visit", "Visit", true, "ER"},

	{ConceptEHR, "EHR", "Type Concept", "Type Concept", "Type Concept", true, "EHR"},

	{ConceptHypertension, "Essential hypertension", "Condition", "SNOMED", "Clinical Finding", true, "59621000"},
	{ConceptType2Diabetes, "Type 2 diabetes mellitus", "Condition", "SNOMED", "Clinical Finding", true, "44054006"},
	{ConceptAsthma, "Asthma", "Condition", "SNOMED", "Clinical Finding", true, "195967001"},
	{ConceptCOPD, "Chronic obstructive pulmonary disease", "Condition", "SNOMED", "Clinical Finding", true, "13645005"},
	{ConceptCKD, "Chronic kidney disease", "Condition", "SNOMED", "Clinical Finding", true, "709044004"},
	{ConceptAtrialFib, "Atrial fibrillation", "Condition", "SNOMED", "Clinical Finding", true, "49436004"},
	{ConceptDepression, "Depressive disorder", "Condition", "SNOMED", "Clinical Finding", true, "35489007"},
	{ConceptObesity, "Obesity", "Condition", "SNOMED", "Clinical Finding", true, "414916001"},
	{ConceptHeartFailure, "Heart failure", "Condition", "SNOMED", "Clinical Finding", true, "84114007"},
	{ConceptMI, "Myocardial infarction", "Condition", "SNOMED", "Clinical Finding", true, "22298006"},
	{ConceptHyperlipidemia, "Hyperlipidemia", "Condition", "SNOMED", "Clinical Finding", true, "55822004"},
	{ConceptOsteoarthritis, "Osteoarthritis", "Condition", "SNOMED", "Clinical Finding", true, "396275006"},
	{ConceptStroke, "Cerebrovascular accident", "Condition", "SNOMED", "Clinical Finding", true, "230690007"},
	{ConceptOsteoporosis, "Osteoporosis", "Condition", "SNOMED", "Clinical Finding", true, "64859006"},

	{ConceptMetformin, "metformin", "Drug", "RxNorm", "Ingredient", true, "6809"},
	{ConceptAtorvastatin, "atorvastatin", "Drug", "RxNorm", "Ingredient", true, "83367"},
	{ConceptSimvastatin, "simvastatin", "Drug", "RxNorm", "Ingredient", true, "36567"},
	{ConceptLisinopril, "lisinopril", "Drug", "RxNorm", "Ingredient", true, "29046"},
	{ConceptRamipril, "ramipril", "Drug", "RxNorm", "Ingredient", true, "35296"},
	{ConceptAmlodipine, "amlodipine", "Drug", "RxNorm", "Ingredient", true, "17767"},
	{ConceptBisoprolol, "bisoprolol", "Drug", "RxNorm", "Ingredient", true, "19484"},
	{ConceptWarfarin, "warfarin", "Drug", "RxNorm", "Ingredient", true, "11289"},
	{ConceptApixaban, "apixaban", "Drug", "RxNorm", "Ingredient", true, "1364430"},
	{ConceptAlbuterol, "albuterol", "Drug", "RxNorm", "Ingredient", true, "435"},
	{ConceptSertraline, "sertraline", "Drug", "RxNorm", "Ingredient", true, "36437"},

	{ConceptBMI, "Body mass index (BMI) [Ratio]", "Measurement", "LOINC", "Clinical Observation", true, "39156-5"},
	{ConceptHbA1c, "Hemoglobin A1c/Hemoglobin.total in Blood", "Measurement", "LOINC", "Lab Test", true, "4548-4"},
	{ConceptSystolicBP, "Systolic blood pressure", "Measurement", "LOINC", "Clinical Observation", true, "8480-6"},
	{ConceptDiastolicBP, "Diastolic blood pressure", "Measurement", "LOINC", "Clinical Observation", true, "8462-4"},
	{ConceptEGFR, "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum or Plasma by Creatinine-based formula (MDRD)", "Measurement", "LOINC", "Lab Test", true, "33914-3"},
	{ConceptCholesterol, "Cholesterol [Mass/volume] in Serum or Plasma", "Measurement", "LOINC", "Lab Test", true, "2093-3"},
	{ConceptCreatinine, "Creatinine [Mass/volume] in Serum or Plasma", "Measurement", "LOINC", "Lab Test", true, "2160-0"},

	{UnitKgPerM2, "kilogram per square meter", "Unit", "UCUM", "Unit", true, "kg/m2"},
	{UnitMmHg, "millimeter mercury column", "Unit", "UCUM", "Unit", true, "mm[Hg]"},
	{UnitPercent, "percent", "Unit", "UCUM", "Unit", true, "%"},
	{UnitEGFR, "milliliter per minute per 1.73 square meter", "Unit", "UCUM", "Unit", true, "mL/min/{1.73_m2}"},
	{UnitMgPerDL, "milligram per deciliter", "Unit", "UCUM", "Unit", true, "mg/dL"},

	{ConceptModaCT, "CT", "Observation", modalityVocabulary, modalityConceptKind, true, "CT"},
	{ConceptModaMR, "MR", "Observation", modalityVocabulary, modalityConceptKind, true, "MR"},
	{ConceptModaXR, "XR", "Observation", modalityVocabulary, modalityConceptKind, true, "XR"},
	{ConceptModaUS, "US", "Observation", modalityVocabulary, modalityConceptKind, true, "US"},

	{ConceptCTChest, "CT of chest", "Procedure", localVocabulary, "Procedure", true, "IMG-CT-CHEST"},
	{ConceptCTHead, "CT of head", "Procedure", localVocabulary, "Procedure", true, "IMG-CT-HEAD"},
	{ConceptCTAbdomen, "CT of abdomen and pelvis", "Procedure", localVocabulary, "Procedure", true, "IMG-CT-ABDPEL"},
	{ConceptMRBrain, "MRI of brain", "Procedure", localVocabulary, "Procedure", true, "IMG-MR-BRAIN"},
	{ConceptMRSpine, "MRI of lumbar spine", "Procedure", localVocabulary, "Procedure", true, "IMG-MR-LSPINE"},
	{ConceptMRKnee, "MRI of knee", "Procedure", localVocabulary, "Procedure", true, "IMG-MR-KNEE"},
	{ConceptXRChest, "Plain X-ray of chest", "Procedure", localVocabulary, "Procedure", true, "IMG-XR-CHEST"},
	{ConceptXRKnee, "Plain X-ray of knee", "Procedure", localVocabulary, "Procedure", true, "IMG-XR-KNEE"},
	{ConceptUSAbdomen, "Ultrasound of abdomen", "Procedure", localVocabulary, "Procedure", true, "IMG-US-ABDO"},
	{ConceptECG, "Electrocardiogram", "Procedure", localVocabulary, "Procedure", true, "PROC-ECG"},
	{ConceptEcho, "Echocardiography", "Procedure", localVocabulary, "Procedure", true, "PROC-ECHO"},
	{ConceptSpirometry, "Spirometry", "Procedure", localVocabulary, "Procedure", true, "PROC-SPIRO"},
	{ConceptColonoscopy, "Colonoscopy", "Procedure", localVocabulary, "Procedure", true, "PROC-COLON"},
	{ConceptCataract, "Cataract extraction", "Procedure", localVocabulary, "Procedure", true, "PROC-CATARACT"},
	{ConceptHipReplace, "Total hip replacement", "Procedure", localVocabulary, "Procedure", true, "PROC-THR"},
}
