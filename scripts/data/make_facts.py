"""Writes experiments/data/facts.smollm2.csv: facts SmolLM2-135M gets right, for ROME-style
Gaussian-noise causal tracing (a prompt, its one-token answer and the subject span).

Run from the repository root, after `just fetch-smollm2`:

    /work/pyenv/bin/python scripts/data/make_facts.py [--min-prob 0.0]

Environment: see pairlib.py. Every candidate below is scored on SmolLM2 (transformers,
GGUF dequantized to f32, `<|im_start|>` first); a fact is kept when it is well formed
(single-token answer with a leading space, subject inside the prompt, no trailing
punctuation, answer not already in the prompt) and its answer is SmolLM2's top-1 next
token, and the fact depends on its subject: with Gaussian noise on the subject's input
embeddings (ROME's corruption: ν = 3 × the std of the embedding matrix, 10 draws, seed
0) the answer keeps at most half of its probability (facts such as "... painted by
Leonardo da" → " Vinci" are answered from the words after the subject and make a flat
causal trace; they were left out of the list or fail this test).
Each candidate's rank and probabilities are printed, so the kept share is visible;
check_pairs.py re-checks the written file and reports the probabilities.
"""

from __future__ import annotations

import argparse

from pairlib import DATA, SmolLM2, contains_word, SENTENCE_END, write_csv

COLUMNS = ["name", "concept", "relation", "clean", "correct", "subject"]
CONCEPT = "facts"

# (relation, prompt, answer, subject); the subject is a substring of the prompt.
CANDIDATES = [
    ("landmark city", "The Eiffel Tower is located in the city of", " Paris", "The Eiffel Tower"),
    ("landmark city", "The Colosseum is located in the city of", " Rome", "The Colosseum"),
    ("landmark city", "Big Ben is located in the city of", " London", "Big Ben"),
    ("landmark city", "The Kremlin is located in the city of", " Moscow", "The Kremlin"),
    ("landmark city", "The Brandenburg Gate is located in the city of", " Berlin", "The Brandenburg Gate"),
    ("landmark city", "The Acropolis is located in the city of", " Athens", "The Acropolis"),
    ("landmark city", "The Forbidden City is located in the city of", " Beijing", "The Forbidden City"),
    ("landmark city", "The Louvre is a museum in the city of", " Paris", "The Louvre"),
    ("landmark city", "The Sagrada Familia is a church in the city of", " Barcelona", "The Sagrada Familia"),
    ("landmark city", "The Hagia Sophia is located in the city of", " Istanbul", "The Hagia Sophia"),
    ("landmark city", "The Space Needle is a tower in the city of", " Seattle", "The Space Needle"),
    ("landmark city", "The White House is located in the city of", " Washington", "The White House"),
    ("landmark country", "The Taj Mahal is located in the country of", " India", "The Taj Mahal"),
    ("landmark country", "The Great Wall is located in the country of", " China", "The Great Wall"),
    ("landmark country", "The pyramids of Giza are located in the country of", " Egypt", "The pyramids of Giza"),
    ("landmark country", "Mount Fuji is the tallest mountain in", " Japan", "Mount Fuji"),
    ("landmark country", "Machu Picchu is an ancient city in the country of", " Peru", "Machu Picchu"),
    ("landmark country", "Stonehenge is a prehistoric monument in", " England", "Stonehenge"),
    ("capital", "The capital city of France is", " Paris", "France"),
    ("capital", "The capital city of Japan is", " Tokyo", "Japan"),
    ("capital", "The capital city of Germany is", " Berlin", "Germany"),
    ("capital", "The capital city of Russia is", " Moscow", "Russia"),
    ("capital", "The capital city of Egypt is", " Cairo", "Egypt"),
    ("capital", "The capital city of Spain is", " Madrid", "Spain"),
    ("capital", "The capital city of Greece is", " Athens", "Greece"),
    ("capital", "The capital city of Italy is", " Rome", "Italy"),
    ("capital", "The capital city of Austria is", " Vienna", "Austria"),
    ("capital", "The capital city of Poland is", " Warsaw", "Poland"),
    ("capital", "The capital city of Ireland is", " Dublin", "Ireland"),
    ("capital", "The capital city of Portugal is", " Lisbon", "Portugal"),
    ("capital", "The capital city of China is", " Beijing", "China"),
    ("capital", "The capital city of Hungary is", " Budapest", "Hungary"),
    ("language", "The official language of Brazil is", " Portuguese", "Brazil"),
    ("language", "The official language of Argentina is", " Spanish", "Argentina"),
    ("language", "The official language of France is", " French", "France"),
    ("language", "The official language of Egypt is", " Arabic", "Egypt"),
    ("language", "Most people in China speak", " Chinese", "China"),
    ("language", "The official language of Mexico is", " Spanish", "Mexico"),
    ("language", "Most people in Germany speak", " German", "Germany"),
    ("language", "The official language of Japan is", " Japanese", "Japan"),
    ("language", "Most people in Italy speak", " Italian", "Italy"),
    ("language", "Most people in Russia speak", " Russian", "Russia"),
    ("company", "The iPhone is a smartphone made by", " Apple", "The iPhone"),
    ("company", "Windows is an operating system developed by", " Microsoft", "Windows"),
    ("company", "The PlayStation is a game console made by", " Sony", "The PlayStation"),
    ("company", "Android is a mobile operating system developed by", " Google", "Android"),
    ("company", "The Model S is an electric car made by", " Tesla", "The Model S"),
    ("company", "The Corolla is a car made by", " Toyota", "The Corolla"),
    ("company", "The Galaxy S is a smartphone made by", " Samsung", "The Galaxy S"),
    ("company", "The Xbox is a game console made by", " Microsoft", "The Xbox"),
    ("company", "The Mustang is a car made by", " Ford", "The Mustang"),
    ("company", "Photoshop is a program made by", " Adobe", "Photoshop"),
    ("company", "The Big Mac is a burger sold by", " McDonald", "The Big Mac"),
    ("company country", "Toyota is a car company from", " Japan", "Toyota"),
    ("company country", "Volkswagen is a car company from", " Germany", "Volkswagen"),
    ("company country", "Samsung is an electronics company from", " Korea", "Samsung"),
    ("company country", "Ferrari is a car company from", " Italy", "Ferrari"),
    ("person nationality", "Albert Einstein was a physicist born in", " Germany", "Albert Einstein"),
    ("person nationality", "Pablo Picasso was a painter from", " Spain", "Pablo Picasso"),
    ("person nationality", "Wolfgang Amadeus Mozart was a composer from", " Austria", "Wolfgang Amadeus Mozart"),
    ("person nationality", "Cristiano Ronaldo is a football player from", " Portugal", "Cristiano Ronaldo"),
    ("person nationality", "William Shakespeare was a writer from", " England", "William Shakespeare"),
    ("person nationality", "The Beatles were a band from", " Liverpool", "The Beatles"),
    ("person nationality", "Leonardo da Vinci was a painter from", " Italy", "Leonardo da Vinci"),
    ("person profession", "Michael Jordan is a famous", " basketball", "Michael Jordan"),
    ("person profession", "Babe Ruth was a famous player of the sport of", " baseball", "Babe Ruth"),
    ("person profession", "Tiger Woods is famous for playing", " golf", "Tiger Woods"),
    ("person profession", "Lionel Messi is a professional", " soccer", "Lionel Messi"),
    ("person profession", "Serena Williams is a professional", " tennis", "Serena Williams"),
    ("food", "Sushi is a traditional dish from", " Japan", "Sushi"),
    ("food", "Pizza is a traditional dish from", " Italy", "Pizza"),
    ("food", "Croissants are a pastry from", " France", "Croissants"),
    ("geography", "The Nile is the longest river in", " Africa", "The Nile"),
    ("geography", "The Amazon rainforest is mostly located in", " Brazil", "The Amazon rainforest"),
    ("geography", "The Sahara is a large desert in", " Africa", "The Sahara"),
    ("geography", "Sydney is the largest city in", " Australia", "Sydney"),
    ("geography", "Toronto is the largest city in", " Canada", "Toronto"),
    ("geography", "Barcelona is a large city in", " Spain", "Barcelona"),
    ("geography", "Munich is a large city in", " Germany", "Munich"),
    ("geography", "Venice is a city in northern", " Italy", "Venice"),
    ("geography", "Kyoto is an old city in", " Japan", "Kyoto"),
    ("geography", "Tuscany is a region in", " Italy", "Tuscany"),
    ("geography", "Bavaria is a region in", " Germany", "Bavaria"),
    ("geography", "Quebec is a province of", " Canada", "Quebec"),
    ("currency", "The currency of Japan is the", " yen", "Japan"),
    ("currency", "The currency of the United Kingdom is the", " pound", "the United Kingdom"),
    ("currency", "The currency of India is the", " rupee", "India"),
    ("science", "The chemical symbol for gold is", " Au", "gold"),
    ("science", "The largest planet in our solar system is", " Jupiter", "our solar system"),
    ("sport", "The Super Bowl is the championship game of American", " football", "The Super Bowl"),
    ("sport", "Wimbledon is a famous tournament in the sport of", " tennis", "Wimbledon"),
]


def form_reasons(relation, prompt, answer, subject, tok) -> list[str]:
    reasons = []
    if not answer.startswith(" ") or len(tok.answer_ids(answer)) != 1:
        reasons.append(f"answer {answer!r} is not one token with a leading space")
    if subject not in prompt:
        reasons.append(f"subject {subject!r} is not in the prompt")
    if prompt != prompt.strip() or prompt[-1] in SENTENCE_END:
        reasons.append("prompt has trailing whitespace or punctuation")
    if contains_word(prompt, answer.strip()):
        reasons.append("prompt contains the answer")
    return reasons


def slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--min-prob", type=float, default=0.0,
                        help="also require this probability of the answer (default 0)")
    parser.add_argument("--max-noised-ratio", type=float, default=0.5,
                        help="drop a fact whose answer keeps more than this share of its "
                             "probability when the subject is noised (default 0.5)")
    args = parser.parse_args()
    model = SmolLM2()
    model.prefetch(prompt for _, prompt, _, _ in CANDIDATES)
    kept = []
    for relation, prompt, answer, subject in CANDIDATES:
        reasons = form_reasons(relation, prompt, answer, subject, model.tokenizer)
        if not reasons:
            rank, prob, top = model.answer_stats(prompt, answer)
            noised = model.noised_prob(prompt, subject, answer)
            if rank != 1:
                reasons.append(f"rank {rank} (top-1 is {top!r})")
            elif prob < args.min_prob:
                reasons.append(f"probability {prob:.3f} < {args.min_prob}")
            elif noised > args.max_noised_ratio * prob:
                reasons.append(f"noising the subject leaves p at {noised:.3f}")
            print(f"{'keep' if not reasons else 'drop'} {prompt!r} -> {answer!r}: "
                  f"rank {rank}, p {prob:.3f}, p noised {noised:.3f}, top-1 {top!r}")
        else:
            print(f"drop {prompt!r}: {'; '.join(reasons)}")
        if not reasons:
            kept.append({"name": f"{slug(subject)}-{slug(answer)}", "concept": CONCEPT,
                         "relation": relation, "clean": prompt, "correct": answer,
                         "subject": subject})
    write_csv(DATA / "facts.smollm2.csv", kept, COLUMNS)
    print(f"{len(kept)} of {len(CANDIDATES)} candidate facts kept (SmolLM2 top-1)")


if __name__ == "__main__":
    main()
