"""Tiny random KerasHub tasks built through keras-hub's public API with in-test vocabularies
(nothing is downloaded): a GPT-2 causal LM, a BERT masked LM and a BART seq2seq LM, and the
padded texts they are fed."""
import keras
import keras_hub

BPE_VOCAB = {"<s>": 0, "<pad>": 1, "</s>": 2, "<mask>": 3, "a": 4, "b": 5, "c": 6, "Ġa": 7, "Ġb": 8, "Ġc": 9, "Ġ": 10}
BPE_MERGES = ["Ġ a", "Ġ b", "Ġ c"]
GPT2_VOCAB = {"<|endoftext|>": 0, "a": 1, "b": 2, "c": 3, "Ġa": 4, "Ġb": 5, "Ġc": 6, "Ġ": 7}
WORDPIECE = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "d", "e"]


def gpt2_causal_lm(sequence_length=8, dropout=0.1):
    keras.utils.set_random_seed(0)
    tokenizer = keras_hub.tokenizers.GPT2Tokenizer(vocabulary=GPT2_VOCAB, merges=BPE_MERGES)
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer=tokenizer, sequence_length=sequence_length)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=len(GPT2_VOCAB), num_layers=1, num_heads=2,
        hidden_dim=8, intermediate_dim=16, dropout=dropout, max_sequence_length=sequence_length)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)


def bert_masked_lm(sequence_length=10):
    keras.utils.set_random_seed(0)
    tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=WORDPIECE)
    preprocessor = keras_hub.models.BertMaskedLMPreprocessor(tokenizer=tokenizer, sequence_length=sequence_length,
        mask_selection_rate=0.4, mask_selection_length=4)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(WORDPIECE), num_layers=1, num_heads=2,
        hidden_dim=8, intermediate_dim=16, max_sequence_length=sequence_length)
    return keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=preprocessor)


def bart_seq2seq_lm(sequence_length=8):
    keras.utils.set_random_seed(0)
    tokenizer = keras_hub.tokenizers.BartTokenizer(vocabulary=BPE_VOCAB, merges=BPE_MERGES)
    preprocessor = keras_hub.models.BartSeq2SeqLMPreprocessor(tokenizer=tokenizer,
        encoder_sequence_length=sequence_length, decoder_sequence_length=sequence_length)
    backbone = keras_hub.models.BartBackbone(vocabulary_size=len(BPE_VOCAB), num_layers=1, num_heads=2,
        hidden_dim=8, intermediate_dim=16, max_sequence_length=sequence_length)
    return keras_hub.models.BartSeq2SeqLM(backbone=backbone, preprocessor=preprocessor)


CAUSAL_TEXTS = ["a b c", "a", "b c a b", "c c"]
MASKED_TEXTS = ["a b c d e", "a b", "c d e a", "e"]
SEQ2SEQ_TEXTS = {"encoder_text": ["a b c", "a", "b c a b", "c c"],
                 "decoder_text": ["b c", "a b c a", "c", "a a"]}
