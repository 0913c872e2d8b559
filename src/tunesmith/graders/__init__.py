"""Graders in OpenAI's JSON format (string_check, text_similarity, python, score_model, multi) and our
json_schema: parsed and checked (spec), rendered (templates), run (grading), and the data check of
the fields they read (fields). Usable on their own: `grade(parse_grader({...}), make_sample(text), row)`.
"""

from .fields import check_data_fields, check_rows, referenced_item_fields
from .grading import GradeResult, GradingSession, grade, grade_rows
from .judge import Judge, configured_judge
from .limits import GraderLimits
from .spec import Grader, graders_in, load_grader, parse_grader, read_grader_spec
from .templates import make_sample, render

__all__ = ["GradeResult", "Grader", "GraderLimits", "GradingSession", "Judge", "check_data_fields", "check_rows",
           "configured_judge", "grade", "grade_rows", "graders_in", "load_grader", "make_sample", "parse_grader",
           "read_grader_spec", "referenced_item_fields", "render"]
