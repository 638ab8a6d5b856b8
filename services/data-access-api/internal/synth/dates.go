package synth

import "time"

// date is a calendar day counted from 2000-01-01, PostgreSQL's epoch for the
// binary date format.
type date int32

// pgEpochUnixDays is 2000-01-01 in days since 1970-01-01.
const pgEpochUnixDays = 10957

// dateOf converts a civil date (proleptic Gregorian) to a date.
func dateOf(y, m, d int) date {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 && y%400 != 0 {
		era--
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return date(era*146097 + doe - 719468 - pgEpochUnixDays)
}

// civil converts a date back to year, month and day.
func (d date) civil() (y, m, day int) {
	z := int(d) + pgEpochUnixDays + 719468
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y = yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	day = doy - (153*mp+2)/5 + 1
	m = mp + 3
	if m > 12 {
		m -= 12
	}
	if m <= 2 {
		y++
	}
	return y, m, day
}

// Time returns the date as midnight UTC.
func (d date) Time() time.Time {
	y, m, day := d.civil()
	return time.Date(y, time.Month(m), day, 0, 0, 0, 0, time.UTC)
}

// ageAt returns the completed years between birth and at, as PostgreSQL's
// AGE(at, birth) reports them.
func ageAt(birth, at date) int {
	by, bm, bd := birth.civil()
	ay, am, ad := at.civil()
	age := ay - by
	if am < bm || (am == bm && ad < bd) {
		age--
	}
	return age
}
