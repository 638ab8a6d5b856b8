package synth

import (
	"math"
	"strconv"
)

// idStride spaces the row ids of one person's events: a person's k-th row of
// a table has id person_id·idStride + k, so ids are unique, independent of
// which slice is loaded, and fit a PostgreSQL integer for up to MaxPersons.
const idStride = 100

// MaxPersons is the largest population Load accepts.
const MaxPersons = 20_000_000

// Per-person row offsets within a stride (k above). Imaging procedures take
// the first offsets so that image_occurrence rows can share their ids.
const (
	maxImages     = 3
	otherProcBase = 10
)

// Age bands (start year, width in years) and their weights: a hospital
// population from newborns to 95 with most patients between 50 and 80.
var (
	ageBandStart  = []int{0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75, 80, 85, 90}
	ageBandWeight = []float64{4, 2.5, 2.5, 3, 4, 5, 5.5, 5.5, 5.5, 6, 7, 7.5, 8, 8.5, 9, 8.5, 6.5, 4.5, 2.5}
)

// Visit counts 1..6 and their weights.
var visitCountWeight = []float64{28, 24, 18, 13, 10, 7}

// Imaging modalities with their share of studies and the procedures each
// modality performs (with weights).
type modality struct {
	concept int32
	share   float64
	procs   []int32
	weights []float64
}

var modalities = []modality{
	{ConceptModaCT, 40, []int32{ConceptCTChest, ConceptCTHead, ConceptCTAbdomen}, []float64{40, 30, 30}},
	{ConceptModaMR, 25, []int32{ConceptMRBrain, ConceptMRSpine, ConceptMRKnee}, []float64{45, 30, 25}},
	{ConceptModaXR, 25, []int32{ConceptXRChest, ConceptXRKnee}, []float64{70, 30}},
	{ConceptModaUS, 10, []int32{ConceptUSAbdomen}, []float64{100}},
}

var modalityShares = func() []float64 {
	w := make([]float64, len(modalities))
	for i, m := range modalities {
		w[i] = m.share
	}
	return w
}()

// Source codes written to *_source_value columns, by concept id.
var sourceCode = func() map[int32]string {
	m := make(map[int32]string, len(Concepts))
	for _, c := range Concepts {
		m[c.ID] = c.Code
	}
	return m
}()

// Reference ranges and units of the measurements.
type measureKind struct {
	unit      int32
	scale     int
	low, high int64 // unscaled, like the value
}

var measureKinds = map[int32]measureKind{
	ConceptBMI:         {UnitKgPerM2, 1, 185, 250},
	ConceptSystolicBP:  {UnitMmHg, 0, 90, 120},
	ConceptDiastolicBP: {UnitMmHg, 0, 60, 80},
	ConceptHbA1c:       {UnitPercent, 1, 40, 60},
	ConceptEGFR:        {UnitEGFR, 0, 90, 120},
	ConceptCholesterol: {UnitMgPerDL, 0, 0, 200},
	ConceptCreatinine:  {UnitMgPerDL, 2, 60, 120},
}

type visit struct {
	id      int32
	concept int32
	start   date
	end     date
	minute  int // start time of day, minutes after midnight
	length  int // minutes, for same-day visits
}

type event struct {
	id      int32
	concept int32
	start   date
	visit   int32
}

type drug struct {
	event
	days int
}

type measure struct {
	event
	value int64 // unscaled, see measureKinds
}

type image struct {
	id       int32
	proc     int32 // procedure_occurrence_id
	visit    int32
	date     date
	modality int32
}

// person is everything generated for one person. Its slices are reused
// from one person to the next.
type person struct {
	id        int32
	male      bool
	gender    int32
	genderSrc string
	birth     date
	age       int
	obsStart  date
	obsEnd    date
	dead      bool
	deathDate date

	bmi, sbp float64 // as stored (rounded)
	t2d, hf  bool

	visits     []visit
	conditions []event
	drugs      []drug
	measures   []measure
	procedures []event
	images     []image

	r rng
}

// features returns the person's SignalModel inputs.
func (p *person) features() Features {
	return Features{AgeYears: p.age, Male: p.male, Type2Diabetes: p.t2d, BMI: p.bmi, SystolicBP: p.sbp}
}

// generate fills p with person id's data for seed. It depends on nothing
// else, so every slice of a population agrees with the whole.
func (p *person) generate(seed uint64, id int64) {
	r := &p.r
	r.reset(seed, id)
	p.id = int32(id)
	p.visits, p.conditions, p.drugs = p.visits[:0], p.conditions[:0], p.drugs[:0]
	p.measures, p.procedures, p.images = p.measures[:0], p.procedures[:0], p.images[:0]

	// Demographics.
	band := r.pick(ageBandWeight)
	width := 5.0
	if band == len(ageBandStart)-1 {
		width = 5.999
	}
	years := float64(ageBandStart[band]) + r.float()*width
	p.birth = refDate - date(math.Round(years*365.2425))
	if p.birth >= refDate {
		p.birth = refDate - 1
	}
	p.age = ageAt(p.birth, refDate)
	a := float64(p.age)
	adult := p.age >= 18
	switch u := r.float(); {
	case u < 0.005:
		p.male, p.gender, p.genderSrc = false, ConceptNoMatch, "U"
	case u < 0.495:
		p.male, p.gender, p.genderSrc = true, ConceptMale, "M"
	default:
		p.male, p.gender, p.genderSrc = false, ConceptFemale, "F"
	}
	female := p.gender == ConceptFemale

	// Baseline measurements that drive conditions and the outcome.
	var bmi float64
	if adult {
		bmi = 27 * math.Exp(0.17*r.normal())
	} else {
		bmi = (15.5 + 0.25*a) * math.Exp(0.12*r.normal())
	}
	bmi = math.Round(clamp(bmi, 12, 65)*10) / 10
	p.bmi = bmi
	htn := adult && r.chance(0.02+0.6*sigmoid((a-62)/9))
	sbp := 100 + 0.5*math.Max(0, a-18) + 12*r.normal()
	if !adult {
		sbp = 95 + 0.8*a + 8*r.normal()
	}
	if htn {
		sbp += 14
	}
	p.sbp = math.Round(clamp(sbp, 80, 230))
	dbp := math.Round(clamp(0.45*p.sbp+20+7*r.normal(), 40, 130))

	// Conditions with age-dependent prevalence.
	p.t2d = adult && r.chance(sigmoid(-5.6+0.05*a+0.12*(bmi-27)))
	obese := bmi >= 30 && r.chance(0.7)
	asthma := r.chance(0.08 + 0.04*b2f(!adult))
	copd := p.age >= 40 && r.chance(0.015+0.10*sigmoid((a-70)/8))
	ckd := adult && r.chance(0.01+0.2*sigmoid((a-75)/8)+0.1*b2f(p.t2d))
	af := adult && r.chance(0.25*sigmoid((a-80)/7))
	depression := p.age >= 12 && r.chance(0.08*(1+0.5*b2f(female)))
	lipids := adult && r.chance(0.35*sigmoid((a-55)/8)+0.1*b2f(p.t2d))
	mi := adult && r.chance(0.12*sigmoid((a-75)/8)*(1+0.5*b2f(p.male)))
	stroke := adult && r.chance(0.08*sigmoid((a-78)/8))
	oa := adult && r.chance(0.3*sigmoid((a-65)/8))
	osteoporosis := adult && r.chance((0.05+0.2*b2f(female))*sigmoid((a-72)/7))
	p.hf = r.chance(Signal.Probability(p.features()))

	// Death, more likely with age and heart failure.
	p.dead = r.chance(0.002 + 0.3*sigmoid((a-88)/5) + 0.1*b2f(p.hf))

	// Observation period: up to 15 years before the reference date, never
	// before birth, ending at death or on the reference date.
	p.obsStart = refDate - date(r.between(365, 15*365))
	if p.obsStart < p.birth {
		p.obsStart = p.birth
	}
	p.obsEnd = refDate
	if p.dead {
		span := int(refDate - p.obsStart)
		p.deathDate = p.obsStart + date(span/3+r.intn(span-span/3))
		p.obsEnd = p.deathDate
	}

	// Visits, sorted by date.
	n := 1 + r.pick(visitCountWeight)
	if p.age >= 65 && n < 6 && r.chance(0.35) {
		n++
	}
	span := int(p.obsEnd - p.obsStart)
	for k := 0; k < n; k++ {
		v := visit{start: p.obsStart + date(r.intn(span+1)), minute: 8*60 + r.intn(10*60)}
		switch u := r.float(); {
		case u < 0.08+0.12*b2f(p.age >= 65):
			v.concept = ConceptInpatient
			v.end = v.start + date(r.between(1, 10))
		case u < 0.20+0.12*b2f(p.age >= 65):
			v.concept = ConceptEmergency
			v.end = v.start
			v.length = r.between(60, 480)
		default:
			v.concept = ConceptOutpatient
			v.end = v.start
			v.length = r.between(15, 60)
		}
		if v.end > p.obsEnd {
			v.end = p.obsEnd
		}
		if v.concept != ConceptInpatient && v.minute+v.length >= 24*60 {
			v.length = 24*60 - 1 - v.minute
		}
		p.visits = append(p.visits, v)
	}
	for i := 1; i < len(p.visits); i++ { // insertion sort: at most 6 visits
		for j := i; j > 0 && p.visits[j].start < p.visits[j-1].start; j-- {
			p.visits[j], p.visits[j-1] = p.visits[j-1], p.visits[j]
		}
	}
	for k := range p.visits {
		p.visits[k].id = p.id*idStride + int32(k)
	}

	// Conditions, each recorded once at one of the visits; heart failure at
	// a visit after the first where there is one.
	for _, c := range [...]struct {
		on      bool
		concept int32
	}{
		{htn, ConceptHypertension}, {p.t2d, ConceptType2Diabetes}, {asthma, ConceptAsthma},
		{copd, ConceptCOPD}, {ckd, ConceptCKD}, {af, ConceptAtrialFib}, {depression, ConceptDepression},
		{obese, ConceptObesity}, {lipids, ConceptHyperlipidemia}, {mi, ConceptMI},
		{stroke, ConceptStroke}, {oa, ConceptOsteoarthritis}, {osteoporosis, ConceptOsteoporosis},
	} {
		if c.on {
			p.conditions = append(p.conditions, p.atVisit(len(p.conditions), c.concept, r.intn(len(p.visits))))
		}
	}
	if p.hf {
		k := 0
		if len(p.visits) > 1 {
			k = 1 + r.intn(len(p.visits)-1)
		}
		p.conditions = append(p.conditions, p.atVisit(len(p.conditions), ConceptHeartFailure, k))
	}

	// Drugs for the conditions.
	prescribe := func(on bool, prob float64, concept int32) {
		if on && r.chance(prob) {
			e := p.atVisit(len(p.drugs), concept, r.intn(len(p.visits)))
			p.drugs = append(p.drugs, drug{event: e, days: 28 * r.between(1, 3)})
		}
	}
	prescribe(p.t2d, 0.85, ConceptMetformin)
	statin := lipids || (p.t2d && p.age >= 40) || mi || stroke
	if statin && r.chance(0.85) {
		if r.chance(0.7) {
			prescribe(true, 1, ConceptAtorvastatin)
		} else {
			prescribe(true, 1, ConceptSimvastatin)
		}
	}
	if htn {
		if r.chance(0.55) {
			prescribe(true, 1, ConceptRamipril)
		} else {
			prescribe(true, 0.8, ConceptLisinopril)
		}
		prescribe(true, 0.45, ConceptAmlodipine)
	}
	prescribe(af || mi, 0.5, ConceptBisoprolol)
	if af {
		if r.chance(0.7) {
			prescribe(true, 0.9, ConceptApixaban)
		} else {
			prescribe(true, 0.9, ConceptWarfarin)
		}
	}
	prescribe(asthma || copd, 0.8, ConceptAlbuterol)
	prescribe(depression, 0.5, ConceptSertraline)

	// Measurements: BMI and blood pressure once, at the first visit; labs at
	// a random visit where indicated.
	p.measure(ConceptBMI, 0, int64(math.Round(bmi*10)))
	p.measure(ConceptSystolicBP, 0, int64(p.sbp))
	p.measure(ConceptDiastolicBP, 0, int64(dbp))
	if p.t2d || (adult && r.chance(0.25)) {
		v := 5.4 + 0.35*r.normal()
		if p.t2d {
			v = 7.6 + 1.2*r.normal()
		}
		p.measure(ConceptHbA1c, r.intn(len(p.visits)), int64(math.Round(clamp(v, 4, 15)*10)))
	}
	if ckd || (p.age >= 40 && r.chance(0.5)) {
		v := 105 - 0.8*math.Max(0, a-30) + 10*r.normal()
		if ckd {
			v -= 35
		}
		p.measure(ConceptEGFR, r.intn(len(p.visits)), int64(math.Round(clamp(v, 5, 140))))
		creat := 0.9*85/math.Max(v, 5) + 0.08*r.normal()
		p.measure(ConceptCreatinine, r.intn(len(p.visits)), int64(math.Round(clamp(creat, 0.3, 15)*100)))
	}
	if adult && r.chance(0.4) {
		p.measure(ConceptCholesterol, r.intn(len(p.visits)), int64(math.Round(clamp(195+40*r.normal(), 90, 400))))
	}

	// Imaging studies, each with its procedure; more common with age.
	if r.chance(0.22 + 0.2*sigmoid((a-50)/15)) {
		n := 1 + r.pick([]float64{60, 28, 12})
		for k := 0; k < n; k++ {
			m := modalities[r.pick(modalityShares)]
			proc := m.procs[r.pick(m.weights)]
			vi := r.intn(len(p.visits))
			e := p.atVisit(k, proc, vi)
			p.procedures = append(p.procedures, e)
			p.images = append(p.images, image{id: e.id, proc: e.id, visit: e.visit, date: e.start, modality: m.concept})
		}
	}

	// Other procedures.
	other := func(on bool, prob float64, concept int32) {
		if on && r.chance(prob) {
			p.procedures = append(p.procedures, p.atVisit(otherProcBase+len(p.procedures)-len(p.images), concept, r.intn(len(p.visits))))
		}
	}
	other(p.age >= 50 || af || mi, 0.3, ConceptECG)
	other(p.hf || af, 0.6, ConceptEcho)
	other(asthma || copd, 0.5, ConceptSpirometry)
	other(p.age >= 50, 0.05, ConceptColonoscopy)
	other(p.age >= 65, 0.08, ConceptCataract)
	other(oa, 0.1, ConceptHipReplace)
}

// atVisit returns the person's k-th event of a table, recorded at visit vi.
func (p *person) atVisit(k int, concept int32, vi int) event {
	v := p.visits[vi]
	return event{id: p.id*idStride + int32(k), concept: concept, start: v.start, visit: v.id}
}

func (p *person) measure(concept int32, vi int, value int64) {
	e := p.atVisit(len(p.measures), concept, vi)
	p.measures = append(p.measures, measure{event: e, value: value})
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// accession returns the accession number of study image id.
func accession(imageID int32) string { return "ACC" + pad10(int64(imageID)) }

// studyUID returns the DICOM Study Instance UID of study image id.
func studyUID(imageID int32) string {
	return "1.2.826.0.1.3680043.8.498." + strconv.FormatInt(int64(imageID), 10)
}

func pad10(v int64) string {
	s := strconv.FormatInt(v, 10)
	const zeros = "0000000000"
	if len(s) < 10 {
		s = zeros[:10-len(s)] + s
	}
	return s
}
