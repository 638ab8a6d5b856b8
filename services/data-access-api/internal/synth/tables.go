package synth

// table is one generated OMOP table: the columns COPY fills and the encoder
// of one person's rows.
type table struct {
	name    string
	columns string
	write   func(e *enc, p *person) int64
}

// tables are loaded in this order; person first.
var tables = []table{
	{"person", "person_id, gender_concept_id, year_of_birth, month_of_birth, day_of_birth, birth_datetime, " +
		"race_concept_id, ethnicity_concept_id, gender_source_value", writePerson},
	{"observation_period", "observation_period_id, person_id, observation_period_start_date, " +
		"observation_period_end_date, period_type_concept_id", writeObservationPeriod},
	{"visit_occurrence", "visit_occurrence_id, person_id, visit_concept_id, visit_start_date, visit_start_datetime, " +
		"visit_end_date, visit_end_datetime, visit_type_concept_id, preceding_visit_occurrence_id", writeVisits},
	{"condition_occurrence", "condition_occurrence_id, person_id, condition_concept_id, condition_start_date, " +
		"condition_type_concept_id, visit_occurrence_id, condition_source_value", writeConditions},
	{"drug_exposure", "drug_exposure_id, person_id, drug_concept_id, drug_exposure_start_date, drug_exposure_end_date, " +
		"drug_type_concept_id, quantity, days_supply, visit_occurrence_id, drug_source_value", writeDrugs},
	{"measurement", "measurement_id, person_id, measurement_concept_id, measurement_date, measurement_type_concept_id, " +
		"value_as_number, unit_concept_id, range_low, range_high, visit_occurrence_id, measurement_source_value", writeMeasurements},
	{"procedure_occurrence", "procedure_occurrence_id, person_id, procedure_concept_id, procedure_date, " +
		"procedure_type_concept_id, visit_occurrence_id, procedure_source_value", writeProcedures},
	{"image_occurrence", "image_occurrence_id, person_id, procedure_occurrence_id, visit_occurrence_id, " +
		"image_occurrence_date, image_study_uid, image_series_uid, modality_concept_id, accession_id", writeImages},
	{"death", "person_id, death_date, death_type_concept_id", writeDeath},
}

// TableNames are the tables Load fills (besides concept rows), in load
// order.
func TableNames() []string {
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.name
	}
	return names
}

func writePerson(e *enc, p *person) int64 {
	y, m, d := p.birth.civil()
	e.tuple(9)
	e.int4(p.id)
	e.int4(p.gender)
	e.int4(int32(y))
	e.int4(int32(m))
	e.int4(int32(d))
	e.timestamp(p.birth, 0)
	e.int4(ConceptNoMatch)
	e.int4(ConceptNoMatch)
	e.text(p.genderSrc)
	return 1
}

func writeObservationPeriod(e *enc, p *person) int64 {
	e.tuple(5)
	e.int4(p.id)
	e.int4(p.id)
	e.date(p.obsStart)
	e.date(p.obsEnd)
	e.int4(ConceptEHR)
	return 1
}

func writeVisits(e *enc, p *person) int64 {
	for k, v := range p.visits {
		e.tuple(9)
		e.int4(v.id)
		e.int4(p.id)
		e.int4(v.concept)
		e.date(v.start)
		e.timestamp(v.start, v.minute)
		e.date(v.end)
		if v.concept == ConceptInpatient {
			e.timestamp(v.end, 11*60)
		} else {
			e.timestamp(v.end, v.minute+v.length)
		}
		e.int4(ConceptEHR)
		if k > 0 {
			e.int4(p.visits[k-1].id)
		} else {
			e.null()
		}
	}
	return int64(len(p.visits))
}

func writeConditions(e *enc, p *person) int64 {
	for _, c := range p.conditions {
		e.tuple(7)
		e.int4(c.id)
		e.int4(p.id)
		e.int4(c.concept)
		e.date(c.start)
		e.int4(ConceptEHR)
		e.int4(c.visit)
		e.text(sourceCode[c.concept])
	}
	return int64(len(p.conditions))
}

func writeDrugs(e *enc, p *person) int64 {
	for _, d := range p.drugs {
		end := d.start + date(d.days-1)
		if end > p.obsEnd {
			end = max(d.start, p.obsEnd)
		}
		e.tuple(10)
		e.int4(d.id)
		e.int4(p.id)
		e.int4(d.concept)
		e.date(d.start)
		e.date(end)
		e.int4(ConceptEHR)
		e.numeric(int64(d.days), 0)
		e.int4(int32(d.days))
		e.int4(d.visit)
		e.text(sourceCode[d.concept])
	}
	return int64(len(p.drugs))
}

func writeMeasurements(e *enc, p *person) int64 {
	for _, m := range p.measures {
		k := measureKinds[m.concept]
		e.tuple(11)
		e.int4(m.id)
		e.int4(p.id)
		e.int4(m.concept)
		e.date(m.start)
		e.int4(ConceptEHR)
		e.numeric(m.value, k.scale)
		e.int4(k.unit)
		e.numeric(k.low, k.scale)
		e.numeric(k.high, k.scale)
		e.int4(m.visit)
		e.text(sourceCode[m.concept])
	}
	return int64(len(p.measures))
}

func writeProcedures(e *enc, p *person) int64 {
	for _, c := range p.procedures {
		e.tuple(7)
		e.int4(c.id)
		e.int4(p.id)
		e.int4(c.concept)
		e.date(c.start)
		e.int4(ConceptEHR)
		e.int4(c.visit)
		e.text(sourceCode[c.concept])
	}
	return int64(len(p.procedures))
}

func writeImages(e *enc, p *person) int64 {
	for _, im := range p.images {
		uid := studyUID(im.id)
		e.tuple(9)
		e.int4(im.id)
		e.int4(p.id)
		e.int4(im.proc)
		e.int4(im.visit)
		e.date(im.date)
		e.text(uid)
		e.text(uid + ".1")
		e.int4(im.modality)
		e.text(accession(im.id))
	}
	return int64(len(p.images))
}

func writeDeath(e *enc, p *person) int64 {
	if !p.dead {
		return 0
	}
	e.tuple(3)
	e.int4(p.id)
	e.date(p.deathDate)
	e.int4(ConceptEHR)
	return 1
}
