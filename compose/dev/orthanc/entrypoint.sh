#!/bin/sh
# Writes an Orthanc configuration from the environment and runs Orthanc:
#   ORTHANC_AET            this server's AE title (PACS, STAGING)
#   ORTHANC_USERNAME       the REST API user; its password is the first line of ORTHANC_PASSWORD_FILE
#   PEER_AET, PEER_HOST, PEER_PORT   the other server of the pair, its one DICOM modality
# Values are written into JSON as given: use letters, digits, '-' and '_'.
set -eu
pw=$(head -n1 "$ORTHANC_PASSWORD_FILE")
cat >/tmp/orthanc.json <<JSON
{
  "Name": "${ORTHANC_AET}", "StorageDirectory": "/var/lib/orthanc/db", "IndexDirectory": "/var/lib/orthanc/db",
  "Plugins": [], "LuaScripts": [],
  "HttpServerEnabled": true, "HttpPort": 8042, "RemoteAccessAllowed": true,
  "AuthenticationEnabled": true, "RegisteredUsers": {"${ORTHANC_USERNAME}": "${pw}"}, "HttpDescribeErrors": true,
  "OrthancExplorerEnabled": false, "WebDavEnabled": false,
  "DicomServerEnabled": true, "DicomAet": "${ORTHANC_AET}", "DicomPort": 4242,
  "DicomCheckCalledAet": true, "DicomCheckModalityHost": false,
  "DicomAlwaysAllowEcho": false, "DicomAlwaysAllowStore": false, "DicomScuTimeout": 10,
  "DicomModalities": {"${PEER_AET}": {"AET": "${PEER_AET}", "Host": "${PEER_HOST}", "Port": ${PEER_PORT:-4242},
    "AllowEcho": true, "AllowFind": true, "AllowMove": true, "AllowGet": true, "AllowStore": true}},
  "StableAge": 1, "SaveJobs": false, "ConcurrentJobs": 2, "HttpTimeout": 60, "DeidentifyLogs": true
}
JSON
export TCP_NODELAY=1
exec Orthanc /tmp/orthanc.json
