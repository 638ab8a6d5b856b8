package cohort

// JoinBack makes e's statistics join the cohort back to omop.person for
// every query, as they do when withPersonAttributes cannot extend it.
func JoinBack(e *Engine) { e.joinBack = true }

// PersonRow exposes withPersonAttributes' decision on q.
func PersonRow(q string) (extended, onePerPerson bool) {
	pr, ok := withPersonAttributes(q)
	return ok, pr.OnePerPerson
}
