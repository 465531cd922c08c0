"""Law forms beyond Chinchilla's: the interface (base), the built-in and custom forms (builtin),
the general fitter (general), the comparison by extrapolation (selection) and predictive
intervals (predict)."""

from orchestrator.fitting.forms.base import FormError, LawForm, Param
from orchestrator.fitting.forms.builtin import FORMS, INPUTS, custom_form, form_by_name, parse_param, resolve_form

__all__ = ["FormError", "LawForm", "Param", "FORMS", "INPUTS", "custom_form", "form_by_name", "parse_param",
           "resolve_form"]
