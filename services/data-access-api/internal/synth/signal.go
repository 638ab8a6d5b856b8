package synth

import (
	"math"
	"time"
)

// ReferenceDate is the generated data's extract date: ages are counted to
// it, and observation periods of persons still alive end on it.
var ReferenceDate = time.Date(2025, time.January, 1, 0, 0, 0, 0, time.UTC)

// refDate is ReferenceDate as a date.
var refDate = dateOf(2025, 1, 1)

// SignalModel is a logistic model of the planted outcome: a person has the
// outcome condition with probability
//
//	p = 1 / (1 + exp(-(Intercept + AgeYears·age + Male·male + Type2Diabetes·t2d + BMI·bmi + SystolicBP·sbp)))
//
// drawn independently per person given these features.
type SignalModel struct {
	// OutcomeConceptID is the condition_concept_id of the outcome; a person
	// has the outcome when one of their condition_occurrence rows has it.
	OutcomeConceptID int32
	// Intercept is the log-odds with every feature at zero.
	Intercept float64
	// AgeYears multiplies age: completed years from person.birth_datetime to
	// ReferenceDate, DATE_PART('year', AGE(DATE '2025-01-01', birth_datetime)).
	AgeYears float64
	// Male multiplies 1 for gender_concept_id 8507, else 0.
	Male float64
	// Type2Diabetes multiplies 1 when the person has a condition_occurrence
	// with concept 201826, else 0.
	Type2Diabetes float64
	// BMI multiplies the value_as_number of the person's one measurement
	// with concept 3038553 (kg/m²).
	BMI float64
	// SystolicBP multiplies the value_as_number of the person's one
	// measurement with concept 3004249 (mmHg).
	SystolicBP float64
}

// Features are one person's inputs to the SignalModel, as read back from the
// loaded tables (see the field comments of SignalModel).
type Features struct {
	AgeYears      int
	Male          bool
	Type2Diabetes bool
	BMI           float64
	SystolicBP    float64
}

// Signal is the planted outcome: heart failure (condition concept 316139),
// with log-odds
//
//	-13 + 0.06·age + 0.5·male + 0.9·t2d + 0.08·bmi + 0.025·sbp
//
// (age in years, BMI in kg/m², systolic blood pressure in mmHg). A woman of
// 60 without diabetes, BMI 27 and systolic 130 has a probability of about
// 1.8 %; a diabetic man of 75 with BMI 32 and systolic 150 about 31 %. Over
// the whole population about 5 % have the outcome. Heart failure arises from
// this model only: no other rule adds or removes it. Treatments and
// procedures that follow heart failure (echocardiography) and the raised
// risk of death it carries are downstream of the outcome, not inputs to it.
var Signal = SignalModel{
	OutcomeConceptID: ConceptHeartFailure,
	Intercept:        -13,
	AgeYears:         0.06,
	Male:             0.5,
	Type2Diabetes:    0.9,
	BMI:              0.08,
	SystolicBP:       0.025,
}

// Logit returns the log-odds of the outcome for f.
func (s SignalModel) Logit(f Features) float64 {
	x := s.Intercept + s.AgeYears*float64(f.AgeYears) + s.BMI*f.BMI + s.SystolicBP*f.SystolicBP
	if f.Male {
		x += s.Male
	}
	if f.Type2Diabetes {
		x += s.Type2Diabetes
	}
	return x
}

// Probability returns the probability of the outcome for f.
func (s SignalModel) Probability(f Features) float64 { return 1 / (1 + math.Exp(-s.Logit(f))) }
