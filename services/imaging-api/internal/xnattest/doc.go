// Package xnattest is an in-process contract server for the part of XNAT's
// REST API that imaging-api's XNAT backend uses, plus the DQR plugin's PACS
// query/import endpoints and a private PostgreSQL holding XNAT's three DQR
// status tables. XNAT itself cannot run on our machines, so the backend's
// contract tests run against this server; it follows FLIP's reference for
// paths, status codes, content types and JSON shapes, keeps all state in
// memory, records every request, and lets tests inject faults (session
// expiry, error statuses, slow responses) and drive imports through DQR's
// lifecycle (queued, executed, archived or failed).
//
// Endpoints (all but the login require a valid JSESSIONID cookie or HTTP
// Basic credentials, else 401):
//
//	POST   /data/JSESSION                     login (Basic user:password or alias:secret) → text/plain session id
//	DELETE /data/JSESSION                     logout
//	GET    /xapi/users                        usernames (the session check)
//	GET    /xapi/users/profiles               user profiles
//	GET    /xapi/users/{u}                    one profile
//	POST   /xapi/users                        create (201; 409 if the username exists)
//	PUT    /xapi/users/{u}                    update (200 with the profile; 304 if nothing changed)
//	PUT    /xapi/users/{u}/enabled/{bool}     enable or disable
//	GET|PUT|DELETE /xapi/users/{u}/roles[/{role}]
//	GET    /data/services/tokens/issue[/user/{u}]  alias token {alias, secret, ...}
//	GET    /data/projects                     ResultSet.Result of projects
//	POST   /data/projects                     create from projectData XML (text/plain id)
//	GET    /data/projects/{p}                 items[0].data_fields
//	DELETE /data/projects/{p}?removeFiles=true
//	GET|PUT /data/projects/{p}/prearchive_code[/{code}]
//	GET    /data/projects/{p}/subjects        ResultSet.Result of subjects
//	GET    /data/projects/{p}/experiments     project-scoped listing (hides xnat:dxSessionData)
//	GET    /data/experiments?project={p}      global listing
//	GET    /data/projects/{p}/experiments/{idOrLabel}?format=json   items[0].data_fields.subject_ID
//	GET    /data/projects/{p}/users           ResultSet.Result of members
//	PUT|DELETE /data/projects/{p}/users/{Owners|Members|Collaborators}/{u}
//	GET    .../subjects/{s}/experiments/{e}/{scans|assessors}/{ALL|id,...}[/resources/{R}]/files?format=zip
//	PUT    .../experiments/{e}/scans/{scan}?xsiType=...        create scan
//	PUT    .../scans/{scan}/resources/{R}                      create resource (409 if it exists)
//	GET|PUT .../scans/{scan}/resources/{R}/files/{name}        read / upload (raw body)
//	GET    /xapi/commands[?image=]            Container Service commands
//	PUT    /xapi/projects/{p}/commands/{id}/wrappers/{w}/enabled
//	POST   /xapi/projects/{p}/events/subscription
//	GET|POST /xapi/pacs, GET|PUT|DELETE /xapi/pacs/{id}, GET /xapi/pacs/{id}/status,
//	POST   /xapi/pacs/{id}/availability
//	GET    /xapi/dqr/settings
//	POST   /xapi/dqr/query/studies            C-FIND by accession (200 list, 204 none)
//	POST   /xapi/dqr/import                   C-MOVE request → per-study queued entries
//	GET|POST /xapi/dqr/import/queue           list / delete queued requests (body: [ids])
//
// Where the reference is silent the server keeps to the smallest plausible
// behaviour; these are assumptions, not observed XNAT facts:
//
//   - A session expires after SessionTimeout of idleness (XNAT's default is
//     15 minutes); HTTP Basic credentials are also accepted on every call, as
//     XNAT does, but create no session. 20 consecutive failed logins lock an
//     account for an hour (XNAT's documented lockout), even for the right
//     password; the counter resets on success.
//   - Errors are short text/plain bodies; success bodies are JSON except the
//     login and project creation (text/plain) and downloads (application/zip).
//     Listings accept format=json or no format; other formats answer 400.
//   - Administrator-only: user management, alias tokens, PACS registration,
//     Container Service configuration (403 otherwise). DQR needs the
//     Administrator or Dqr role (401 otherwise, which is what FLIP handles).
//     Non-administrators list only the projects they belong to.
//   - POST /data/projects needs an XML content type (415 otherwise), rejects a
//     DOCTYPE (400), takes ID, secondary_ID, name and description from the
//     projectData children by local name, requires an ID of [A-Za-z0-9_-]
//     (400), defaults secondary_ID and name to the ID, and answers 409 when
//     the ID, secondary_ID or name is taken. With Options.SiteURLUnset it
//     creates the project and then answers 500, as XNAT 1.10 does without a
//     siteUrl.
//   - A user has at most one role per project; adding moves them. Adding an
//     unknown user or to an unknown project answers 404.
//   - PUT /xapi/users/{u} accepts any of email, enabled, firstName, lastName,
//     password, verified; lastModified is omitted from a profile until the
//     first change; lastSuccessfulLogin is null until the first login.
//   - The PACS matches accession numbers case-insensitively (as Orthanc does).
//     A query or import naming an unknown PACS answers 404. An import of a
//     project that does not exist is accepted (DQR does not check); studies
//     unknown to the PACS are left out of the import response; a study named
//     twice is queued once. Each entry echoes the request's relabelMap.
//   - Queued requests move to "executed" only when a test drives them
//     (Server.ExecuteImport, CompleteImport, FailImport); completing one whose
//     destination "<aeTitle>:<port>" is not the SCP receiver fails it, as
//     DQR's destination check does. A completed import becomes an experiment
//     labelled relabelMap.Session under a subject labelled relabelMap.Subject,
//     carrying the PACS study's scans. When Options.DB is set, every queue
//     and execution change is mirrored into the xhbm_* tables.
//   - Download zips are stored (not deflated), one flush per entry, laid out
//     <experiment label>/{scans|assessors}/<id>/resources/<R>/files/<name>;
//     a selection with no files answers 404.
//   - Uploading a file answers 201, replacing one 200; replacing needs
//     overwrite=true (409 otherwise). Creating an existing scan answers 200.
//   - A project event subscription is refused (400) unless its command's
//     wrapper was enabled for the project first.
package xnattest
