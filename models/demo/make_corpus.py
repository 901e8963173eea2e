"""Generate the demo model's training corpus: short children's stories from a small grammar and word
lists, with a seeded RNG, so the corpus (and the model trained on it) is reproducible offline.
Not a data set download and not natural text: a few hundred templates over a few hundred words.

    python models/demo/make_corpus.py --out /tmp/demo-corpus.txt --stories 16000 --seed 1

One story per line block; stories are separated by a blank line (train.py splits on it).
"""

from __future__ import annotations

import argparse
import pathlib
import random

# (name, kind, pronoun) — kind is how a story introduces them, pronoun picks he/she/it.
HEROES = [
    ("Lily", "a little girl", "she"), ("Tom", "a little boy", "he"), ("Mia", "a curious girl", "she"),
    ("Ben", "a brave boy", "he"), ("Sue", "a kind girl", "she"), ("Max", "a small dog", "he"),
    ("Lucy", "a happy girl", "she"), ("Sam", "a shy boy", "he"), ("Anna", "a clever girl", "she"),
    ("Tim", "a funny boy", "he"), ("Kitty", "a soft cat", "she"), ("Bob", "a big bear", "he"),
    ("Rosie", "a little rabbit", "she"), ("Jack", "a strong boy", "he"), ("Emma", "a gentle girl", "she"),
    ("Leo", "a young lion", "he"), ("Daisy", "a tiny duck", "she"), ("Ollie", "a sleepy owl", "he"),
    ("Zoe", "a busy girl", "she"), ("Pip", "a little mouse", "he"),
]
FRIENDS = [
    ("a friendly frog", "the frog"), ("a wise old owl", "the owl"), ("a little bird", "the bird"),
    ("a kind dog", "the dog"), ("a fluffy cat", "the cat"), ("a happy duck", "the duck"),
    ("a big brown bear", "the bear"), ("a small squirrel", "the squirrel"), ("a gentle cow", "the cow"),
    ("a funny monkey", "the monkey"), ("a busy bee", "the bee"), ("a tall giraffe", "the giraffe"),
    ("{poss} mom", "Mom"), ("{poss} dad", "Dad"), ("an old man", "the old man"), ("a nice lady", "the lady"),
]
PLACES = ["park", "garden", "forest", "beach", "farm", "river", "hill", "town", "lake", "meadow",
          "zoo", "school", "yard", "field", "shop", "pond"]
THINGS = ["ball", "kite", "box", "hat", "book", "flower", "shell", "cake", "toy car", "balloon",
          "boat", "apple", "cookie", "drum", "sock", "key", "stone", "leaf", "cup", "bell"]
COLORS = ["red", "blue", "green", "yellow", "pink", "purple", "orange", "white", "brown", "shiny"]
SIZES = ["big", "small", "little", "tiny", "huge", "round", "soft", "old", "new", "pretty"]
LIKES = ["play outside", "run in the grass", "sing songs", "draw pictures", "read books",
         "jump in puddles", "look at the stars", "help at home", "build with blocks", "play with friends",
         "swim in the water", "dance in the sun", "climb trees", "bake cookies", "ride a bike"]
SAD = ["sad", "scared", "worried", "upset", "unhappy"]
GLAD = ["happy", "proud", "excited", "glad", "thankful"]
WEATHER = ["The sun was warm and bright.", "The sky was blue and clear.", "It was a windy day.",
           "It started to rain.", "The wind was cold.", "The birds were singing.",
           "The flowers smelled sweet.", "It was a sunny morning.", "The moon was big and round."]
PROBLEMS = [
    ("stuck in a tall tree", "got the {thing} down from the tree"),
    ("lost in the tall grass", "found the {thing} in the grass"),
    ("at the bottom of the pond", "pulled the {thing} out of the pond"),
    ("too heavy to lift", "carried the {thing} home together"),
    ("broken into two pieces", "fixed the {thing} with some tape"),
    ("on top of the roof", "used a long stick to get the {thing}"),
    ("under a big rock", "pushed the rock and found the {thing}"),
    ("very dirty", "washed the {thing} with warm water"),
]
MORALS = [
    "Sharing is more fun than keeping things to yourself.",
    "It is good to ask for help when you need it.",
    "Being kind to others makes everyone happy.",
    "If you try hard, you can do it.",
    "Friends help each other.",
    "It is important to be careful.",
    "Saying sorry can make things better.",
]
ENDINGS = [
    "From that day on, {name} and {friend} were best friends.",
    "{Name} smiled and said thank you.",
    "They played together until the sun went down.",
    "{Name} went home and told Mom all about it.",
    "That night, {name} fell asleep with a big smile.",
    "{Name} learned that {moral_lc}",
    "The end.",
]


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def cap(s: str) -> str:
    return s[0].upper() + s[1:]


class Story:
    """One story's cast and props, drawn once, so its sentences agree with each other."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.name, self.kind, self.pron = rng.choice(HEROES)
        self.poss = {"she": "her", "he": "his"}[self.pron]
        self.obj = {"she": "her", "he": "him"}[self.pron]
        self.friend_intro, self.friend = rng.choice(FRIENDS)
        self.place = rng.choice(PLACES)
        self.thing = rng.choice(THINGS)
        self.adj = rng.choice(COLORS if rng.random() < 0.5 else SIZES)
        self.problem, self.fix = rng.choice(PROBLEMS)
        self.moral = rng.choice(MORALS)

    def fmt(self, s: str) -> str:
        return s.format(name=self.name, Name=self.name, pron=self.pron, Pron=cap(self.pron), poss=self.poss,
                        Poss=cap(self.poss), obj=self.obj, friend=self.friend, Friend=cap(self.friend),
                        friend_intro=self.friend_intro.format(poss=self.poss), place=self.place, thing=self.thing, adj=self.adj,
                        a_adj=article(self.adj), moral_lc=self.moral[0].lower() + self.moral[1:],
                        like=self.rng.choice(LIKES), sad=self.rng.choice(SAD), glad=self.rng.choice(GLAD),
                        problem=self.problem, fix=self.fix.format(thing=self.thing))

    def opening(self) -> list[str]:
        r = self.rng.random()
        if r < 0.55:
            s = ["Once upon a time, there was {kind} named {name}."]
        elif r < 0.8:
            s = ["One day, {kind} named {name} went to the {place}."]
        else:
            s = ["There was once {kind} called {name}."]
        s = [x.replace("{kind}", self.kind) for x in s]
        s.append(self.rng.choice(["{Pron} loved to {like}.", "{Pron} liked to {like} every day.",
                                  "Every day, {pron} liked to {like}."]))
        return s

    def middle(self) -> list[str]:
        rng = self.rng
        s = []
        if rng.random() < 0.5:
            s.append(rng.choice(WEATHER))
        s.append(rng.choice([
            "One day, {name} went to the {place} and saw {a_adj} {adj} {thing}.",
            "At the {place}, {name} found {a_adj} {adj} {thing}.",
            "{Name} had {a_adj} {adj} {thing} that {pron} loved very much.",
        ]))
        s.append("But the {thing} was {problem}.")
        s.append(rng.choice(['{Name} was {sad}. "Oh no! What can I do?" {pron} said.',
                             '"Oh no, my {thing}!" said {name}. {Pron} felt {sad}.',
                             "{Name} did not know what to do."]))
        s.append(rng.choice(["Then {friend_intro} came by.", "Just then, {friend_intro} saw {obj}.",
                             "Soon, {friend_intro} walked up to {obj}."]))
        s.append(rng.choice(['"Can you help me?" asked {name}. "Yes, I can help you," said {friend}.',
                             '{Friend} said, "Do not worry. I will help you."',
                             '"What is wrong?" asked {friend}. {Name} told {friend} about the {thing}.']))
        s.append(rng.choice(["Together, they {fix}.", "{Friend} and {name} {fix}.",
                             "They worked hard, and at last they {fix}."]))
        return s

    def ending(self) -> list[str]:
        rng = self.rng
        s = [rng.choice(["{Name} was so happy.", "{Name} felt very {glad}.",
                         '"Thank you!" said {name} with a big smile.'])]
        s += sorted(rng.sample(ENDINGS, rng.randint(1, 2)), key=lambda e: e == "The end.")
        return s

    def text(self) -> str:
        sentences = self.opening() + self.middle() + self.ending()
        return " ".join(self.fmt(x) for x in sentences)


def make_corpus(n_stories: int, seed: int) -> str:
    rng = random.Random(seed)
    return "\n\n".join(Story(rng).text() for _ in range(n_stories)) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--stories", type=int, default=16000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    text = make_corpus(args.stories, args.seed)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}: {args.stories} stories, {len(text.encode()) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
