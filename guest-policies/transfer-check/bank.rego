# The bank's transfer policy as written for OPA 0.60 (Rego v0 syntax).
# The transfer-check guest implements exactly these rules; teller's tests
# evaluate this file with regorus as an independent oracle.
package bank

default allow = false

allow {
    input.action == "transfer"
    input.amount <= 1000000
    input.user.role == "authorized"
    input.audit.enabled == true
}

deny {
    input.action == "transfer"
    input.amount > 1000000
    not input.approval.required
}
