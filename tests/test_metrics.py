"""Text metrics against values computed by hand."""

import pytest

from tunesmith.evaluation.text_metrics import exact_match, lcs_length, loops, normalize_answer, rouge_l, token_f1


def test_normalize_drops_case_punctuation_and_articles():
    assert normalize_answer("  The Cat, a HAT!  ") == "cat hat"


def test_exact_match():
    assert exact_match("The cat.", "cat") == 1.0
    assert exact_match("cat sat", "cat") == 0.0


def test_token_f1_by_hand():
    # pred -> [cat, sat, on, mat], ref -> [cat, on, mat]: 3 common, P = 3/4, R = 1, F1 = 6/7.
    assert token_f1("the cat sat on the mat", "a cat on a mat") == pytest.approx(6 / 7)
    # Repeated tokens count once per occurrence: [yes, yes, yes] vs [yes]: P = 1/3, R = 1, F1 = 1/2.
    assert token_f1("yes yes yes", "yes") == pytest.approx(0.5)
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "cat") == 0.0


def test_lcs_length_classic():
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4


def test_rouge_l_by_hand_and_order_sensitive():
    # [police, killed, gunman] vs [police, kill, gunman]: LCS 2, P = R = 2/3.
    assert rouge_l("police killed the gunman", "police kill the gunman") == pytest.approx(2 / 3)
    # Same bag of words in another order: token F1 is unchanged, ROUGE-L falls (LCS 1).
    assert token_f1("gunman the killed police", "police kill the gunman") == pytest.approx(2 / 3)
    assert rouge_l("gunman the killed police", "police kill the gunman") == pytest.approx(1 / 3)
    assert rouge_l("a b c d", "a b c d") == 1.0


@pytest.mark.parametrize("text, looping", [
    ("Hi Alex, " * 10, True),                                   # the tuned support model's answer
    ("Thank you for your message. " * 4 + "Best regards", True),  # a 5-word phrase over most of it
    ("yes " * 12, True),
    ("A building permit is a decision from the municipality that allows you to build. It usually takes "
     "four to six weeks, and the fee depends on the size of the building.", False),
    ("Hi Alex, Hi Alex.", False),                               # too short to call
    ("the cat and the dog and the bird and the fish sat on the mat by the door", False),
])
def test_loops(text, looping):
    assert loops(text) is looping
