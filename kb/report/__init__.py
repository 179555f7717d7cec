"""The report stage: status, the JSON views every door answers, and the doctor's checks."""
