//! Table tests of the expression language through its public API: parsing and its errors,
//! bounds, static types, evaluation and its errors, traces and display. They must not reach
//! into the lexer, parser, checker or evaluator directly, so those stay free to change.

use super::*;

fn env(r: &Ref) -> Option<Value> {
    let s = |s: &str| Value::Str(s.into());
    Some(match r.to_string().as_str() {
        "params.model" => s("linear"),
        "params.deploy" => Value::Bool(true),
        "params.fast" => Value::Bool(false),
        "params.max_rmse" => Value::Float(0.5),
        "params.baseline" => Value::Float(1.0),
        "params.n" => Value::Int(3),
        "params.big" => Value::Int(i64::MAX),
        "params.tags" => Value::List(vec![s("a"), s("b")]),
        "matrix.lr" => Value::Float(0.1),
        "metrics.rmse" => Value::Float(0.71),
        "metrics.accuracy" => Value::Float(0.93),
        "metrics.loss" => Value::Float(1.2),
        "steps.validate.metrics.rmse" => Value::Float(0.2),
        "steps.train-a.metrics.x" => Value::Int(1),
        _ => return None,
    })
}

fn types(r: &Ref) -> Option<Type> {
    env(r).map(|v| v.type_of())
}

/// Parses `input` and evaluates it against `env`, then compares the value or the error
/// (`parse@OFFSET+LEN: message` or `eval: message`) with `expected`.
fn check(input: &str, expected: &str) {
    let got = match parse(input) {
        Err(e) => format!("parse@{}+{}: {}", e.offset, e.len, e.message),
        Ok(expr) => match expr.eval(&env) {
            Ok(v) => v.to_string(),
            Err(e) => format!("eval: {e}"),
        },
    };
    assert_eq!(got, expected, "input: {input:?}");
}

/// Like `check` for `Expr::check` against `types`: the type or `type@OFFSET+LEN: message`.
fn check_type(input: &str, expected: &str) {
    let got = match parse(input).map(|e| e.check(&types)) {
        Err(e) => format!("parse: {e}"),
        Ok(Ok(t)) => t.to_string(),
        Ok(Err(e)) => format!("type@{}+{}: {}", e.offset, e.len, e.message),
    };
    assert_eq!(got, expected, "input: {input:?}");
}

/// Runs `f` on each `input => expected` line of `table`.
fn table(f: fn(&str, &str), table: &str) {
    for line in table.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (input, expected) = line.split_once(" => ").expect("a case is `input => expected`");
        f(input, expected);
    }
}

#[test]
fn evaluates() {
    table(
        check,
        r#"
        params.model == 'linear' => true
        params.deploy && steps.validate.metrics.rmse < 0.3 => true
        metrics.rmse < params.max_rmse => false
        metrics.accuracy >= 0.9 && metrics.loss < 1.5 * params.baseline => true
        matrix.lr in [0.01, 0.1] || !params.fast => true
        1 + 2 * 3 => 7
        (1 + 2) * 3 => 9
        2 - 1 - 1 => 0
        7 / 2 => 3
        -7 % 3 => -1
        7.0 / 2 => 3.5
        -3 - -3 => 0
        - - 2 => 2
        -(2.5) => -2.5
        1e-3 => 0.001
        2.5E+2 => 250.0
        -9223372036854775808 => -9223372036854775808
        'a' + "b" => 'ab'
        'it\'s' + "\"\\\n\t" => 'it\'s"\\\n\t'
        '日本' + 'é' => '日本é'
        1 == 1.0 => true
        1 != 2 => true
        'abc' < 'abd' => true
        1 >= 1 && 1 <= 1.5 && 2 > 1 => true
        !(1 < 2) => false
        2 > 1 == true => true
        0.1 + 0.2 > 0.3 => true
        'lin' in params.model => true
        'a' in params.tags => true
        'c' in params.tags => false
        'x' in [] => false
        2 in [1, 1 + 1,] => true
        params.n in [1.0, 3.0] => true
        true and not false => true
        false or true => true
        params.fast && metrics.f1 > 1 => false
        params.deploy || metrics.f1 => true
        steps.train-a.metrics.x - 1 => 0
        params.n-1 => 2
        params.n*-1 => -3
        "#,
    );
}

#[test]
fn eval_errors() {
    table(
        check,
        r#"
        metrics.f1 > 0.5 => eval: metrics.f1 is not set
        steps.x.metrics.y => eval: steps.x.metrics.y is not set
        params.model == 1 => eval: cannot compare string `params.model` ('linear') with int 1
        true != 'true' => eval: cannot compare bool true with string 'true'
        1 / 0 => eval: division by zero in `1 / 0`
        1.5 % (1 - 1) => eval: division by zero in `1.5 % (1 - 1)`
        params.big + 1 => eval: integer overflow in `params.big + 1`
        -params.big - 2 => eval: integer overflow in `-params.big - 2`
        - -9223372036854775808 => eval: integer overflow in `- -9223372036854775808`
        -9223372036854775808 % -1 => eval: integer overflow in `-9223372036854775808 % -1`
        true < false => eval: cannot compare bool true with bool false using `<`
        'a' >= 1 => eval: cannot compare string 'a' with int 1 using `>=`
        1 && true => eval: `&&` needs a boolean, found int 1
        false or params.n => eval: `||` needs a boolean, found int `params.n` (3)
        !1 => eval: `!` needs a boolean, found int 1
        -params.model => eval: `-` needs a number, found string `params.model` ('linear')
        'a' - 'b' => eval: cannot apply `-` to string 'a' and string 'b'
        'a' + 1 => eval: cannot apply `+` to string 'a' and int 1
        1 in 2 => eval: `in` needs a list or a string on the right, found int 2
        1 in 'abc' => eval: `in` on a string needs a string on the left, found int 1
        'b' in ['a', 1] => eval: cannot compare string 'b' with int 1 in the list
        'a' in ['a', 1] => eval: cannot compare string 'a' with int 1 in the list
        "#,
    );
}

#[test]
fn parse_errors() {
    check("", "parse@0+0: empty expression");
    check(" \n ", "parse@3+0: empty expression");
    table(
        check,
        r#"
        ( => parse@1+0: expected an operand, found end of input
        ) => parse@0+1: expected an operand, found `)`
        (1 + 2 => parse@0+1: unclosed `(`
        (1 2) => parse@3+1: expected `)`, found `2`
        1 + 2) => parse@5+1: unmatched `)`
        1 in [1]] => parse@8+1: unmatched `]`
        1 + => parse@3+0: expected an operand, found end of input
        1 2 => parse@2+1: expected an operator, found `2`
        && true => parse@0+2: expected an operand, found `&&`
        'abc => parse@0+4: unterminated string
        ' => parse@0+1: unterminated string
        "a' => parse@0+3: unterminated string
        'a\ => parse@0+3: unterminated string
        'a\q' => parse@2+2: unknown escape `\q`: use \\, \', \", \n or \t
        params.x = 1 => parse@9+1: unexpected `=`: did you mean `==`?
        params.x & true => parse@9+1: unexpected `&`: did you mean `&&`?
        a | b => parse@2+1: unexpected `|`: did you mean `||`?
        foo.x => parse@0+5: unknown reference `foo.x`: expected params.NAME, matrix.KEY, metrics.NAME or steps.STEP.metrics.NAME
        params.a.b => parse@0+10: unknown reference `params.a.b`: expected params.NAME, matrix.KEY, metrics.NAME or steps.STEP.metrics.NAME
        steps.t.rmse => parse@0+12: unknown reference `steps.t.rmse`: expected params.NAME, matrix.KEY, metrics.NAME or steps.STEP.metrics.NAME
        params.a-b.x => parse@9+3: unknown reference `b.x`: expected params.NAME, matrix.KEY, metrics.NAME or steps.STEP.metrics.NAME
        linear => parse@0+6: unknown reference `linear`: expected params.NAME, matrix.KEY, metrics.NAME or steps.STEP.metrics.NAME (for text, write 'linear')
        yes => parse@0+3: unknown reference `yes`: expected params.NAME, matrix.KEY, metrics.NAME or steps.STEP.metrics.NAME (did you mean `true`?)
        On => parse@0+2: unknown reference `On`: expected params.NAME, matrix.KEY, metrics.NAME or steps.STEP.metrics.NAME (did you mean `true`?)
        y => parse@0+1: unknown reference `y`: expected params.NAME, matrix.KEY, metrics.NAME or steps.STEP.metrics.NAME (did you mean `true`?)
        params.deploy == no => parse@17+2: unknown reference `no`: expected params.NAME, matrix.KEY, metrics.NAME or steps.STEP.metrics.NAME (did you mean `false`?)
        OFF => parse@0+3: unknown reference `OFF`: expected params.NAME, matrix.KEY, metrics.NAME or steps.STEP.metrics.NAME (did you mean `false`?)
        n => parse@0+1: unknown reference `n`: expected params.NAME, matrix.KEY, metrics.NAME or steps.STEP.metrics.NAME (did you mean `false`?)
        yess => parse@0+4: unknown reference `yess`: expected params.NAME, matrix.KEY, metrics.NAME or steps.STEP.metrics.NAME (for text, write 'yess')
        params. => parse@7+0: expected a name after `.`
        params.1 > 0 => parse@7+1: expected a name after `.`
        1 < 2 < 3 => parse@6+1: comparisons cannot be chained: write `a < b && b < c`
        1 == 1 != 1 => parse@7+2: `==` and `!=` cannot be chained: add parentheses
        1.x => parse@0+3: invalid number `1.x`
        1abc => parse@0+4: invalid number `1abc`
        1.5.3 => parse@0+5: invalid number `1.5.3`
        1e => parse@0+2: invalid number `1e`
        .5 => parse@0+1: a number needs a digit before `.`: write `0.5`
        9223372036854775808 => parse@0+19: number out of range: `9223372036854775808`
        99999999999999999999 => parse@0+20: number out of range: `99999999999999999999`
        1e999 => parse@0+5: number out of range: `1e999`
        [1, 2] => parse@0+1: a list is only allowed right of `in`
        1 in [[1]] => parse@6+1: a list is only allowed right of `in`
        1 in [1, 2 => parse@5+1: unclosed `[`
        1 in [1 2] => parse@8+1: expected `,` or `]`, found `2`
        1 in [,] => parse@6+1: expected an operand, found `,`
        'é' == ü => parse@7+1: unexpected character `ü`
        1 # 2 => parse@2+1: unexpected character `#`
        "#,
    );
}

#[test]
fn bounds() {
    let deep = |at: usize| format!("parse@{at}+1: expression is nested too deeply (more than 64 levels)");
    let nest = |open: &str, close: &str, n: usize| format!("{}1{}", open.repeat(n), close.repeat(n));
    check(&"(".repeat(10_000), "parse@4096+5904: expression is too long: 10000 characters, the limit is 4096");
    check(&nest("(", ")", 64), "1");
    check(&nest("(", ")", 65), &deep(64));
    check(&nest("(", "", 4000), &deep(64));
    check(&nest("-", "", 65), &deep(64));
    check(&format!("{}true", "!".repeat(64)), "true");
    check(&format!("{}true", "!".repeat(4000)), &deep(64));
    check(&format!("{}true", "not ".repeat(100)), "parse@256+3: expression is nested too deeply (more than 64 levels)");
    check(&format!("{}1", "1+".repeat(256)), "257");
    check(&format!("{}1", "1+".repeat(2000)), "parse@513+1: expression is too complex (more than 256 operations)");
    check(&format!("'{}", "a".repeat(4095)), "parse@0+4096: unterminated string");
}

#[test]
fn worst_cases_fit_in_a_small_stack() {
    let mut parens = "1".to_string();
    for _ in 0..63 {
        parens = format!("(1+1+1+{parens})");
    }
    let cases = [format!("{}1", "1+".repeat(255)), format!("{}true", "true&&".repeat(255)), parens];
    let run = move || {
        for text in &cases {
            let expr = parse(text).unwrap();
            assert!(expr.eval(&env).is_ok() && expr.check(&types).is_ok());
        }
    };
    std::thread::Builder::new().stack_size(1 << 20).spawn(run).unwrap().join().unwrap();
}

#[test]
fn never_panics() {
    let parts = "(~)~'~\"~\\~[~]~,~1~0~1.5~-~!~in ~not ~é~params.n~steps.a-b.metrics.x~==~=~&&~<~ ~.~e~/~%~9223372036854775808~params.big~'s'~params.tags";
    let parts: Vec<&str> = parts.split('~').collect();
    let run = |text: &str| {
        if let Ok(expr) = parse(text) {
            let _ = (expr.eval_traced(&env), expr.check_bool(&types), expr.refs());
        }
    };
    for a in &parts {
        for b in &parts {
            for c in &parts {
                run(&format!("{a}{b}{c}"));
            }
        }
    }
    let chars: Vec<char> =
        "matrix.lr in [0.01, 1] || !params.fast && 'a\\'b' != \"é\" + params.model".chars().collect();
    for i in 0..chars.len() {
        run(&chars[..i].iter().collect::<String>());
        run(&chars[i..].iter().collect::<String>());
    }
}

#[test]
fn types_are_inferred() {
    table(
        check_type,
        r#"
        metrics.rmse < params.max_rmse => bool
        1 + 2 => int
        1 + 2.0 => float
        -params.n => int
        metrics.f1 + 1 => any
        'a' + metrics.f1 => string
        metrics.f1 => any
        params.n in params.tags => bool
        'x' in params.model => bool
        params.n in [1, 2.5, metrics.f1] => bool
        metrics.f1 && metrics.f2 == 'x' => bool
        params.model == 1 => type@0+17: cannot compare string `params.model` with int `1`
        !params.n => type@1+8: `!` needs a boolean, found int `params.n`
        params.deploy || 1 => type@17+1: `||` needs a boolean, found int `1`
        -params.model => type@1+12: `-` needs a number, found string `params.model`
        true < false => type@0+12: cannot compare bool `true` with bool `false` using `<`
        params.tags > 1 => type@0+15: cannot compare list `params.tags` with int `1` using `>`
        'a' * 2 => type@0+7: cannot apply `*` to string `'a'` and int `2`
        true + metrics.f1 => type@0+17: cannot apply `+` to bool `true` and any `metrics.f1`
        params.model in [1, 'a'] => type@17+1: cannot compare string `params.model` with int `1` in the list
        1 in params.model => type@0+17: `in` on a string needs a string on the left, found int `1`
        1 in (2) => type@0+8: `in` needs a list or a string on the right, found int `(2)`
        "#,
    );
    let bool_check = |input: &str| parse(input).map(|e| e.check_bool(&types));
    let message = "expected a boolean expression, found int".to_string();
    assert_eq!(bool_check(" (1 + 2) "), Ok(Err(TypeError { message, offset: 1, len: 7 })));
    assert_eq!(bool_check("metrics.f1"), Ok(Ok(())));
}

#[test]
fn refs_in_source_order() {
    let expr = parse("params.a && (steps.train-x.metrics.rmse < params.a + matrix.k)").unwrap();
    let got: Vec<String> = expr.refs().iter().map(|u| format!("{}@{}+{}", u.reference, u.offset, u.len)).collect();
    let expected = ["params.a@0+8", "steps.train-x.metrics.rmse@13+26", "params.a@42+8", "matrix.k@53+8"];
    assert_eq!(got, expected);
    let step = Ref::StepMetric { step: "train-x".into(), metric: "rmse".into() };
    assert_eq!(expr.refs()[1].reference, step);
    assert_eq!(parse("'é' == metrics.m").unwrap().refs()[0].offset, 7);
    assert_eq!(expr.source(), "params.a && (steps.train-x.metrics.rmse < params.a + matrix.k)");
}

#[test]
fn traced_and_boolean_eval() {
    let expr = parse("metrics.rmse > 0 && metrics.rmse < params.max_rmse || params.fast").unwrap();
    let (result, trace) = expr.eval_traced(&env);
    assert_eq!(result, Ok(Value::Bool(false)));
    let seen: Vec<String> = trace.iter().map(|(r, v)| format!("{r} = {v}")).collect();
    assert_eq!(seen, ["metrics.rmse = 0.71", "params.max_rmse = 0.5", "params.fast = false"]);
    let (result, trace) = parse("params.n > 1 && metrics.nope").unwrap().eval_bool_traced(&env);
    assert_eq!(result, Err(EvalError { message: "metrics.nope is not set".into() }));
    assert_eq!(trace, [(Ref::Param("n".into()), Value::Int(3))]);
    let not_bool = parse("1 + 1").unwrap().eval_bool(&env).unwrap_err();
    assert_eq!(not_bool.to_string(), "expected a boolean result, found int 2");
    assert_eq!(parse("params.deploy").unwrap().eval_bool(&env), Ok(true));
}

#[test]
fn displays() {
    let list = [Value::Int(1), Value::Float(0.5), Value::Float(2.0), Value::Str("a'b\\".into())];
    let list = Value::List([&list[..], &[Value::Bool(true)]].concat());
    assert_eq!(list.to_string(), r"[1, 0.5, 2.0, 'a\'b\\', true]");
    let e = parse("params.x = 1").unwrap_err();
    assert_eq!(e.to_string(), "unexpected `=`: did you mean `==`? (column 10)");
    let rendered = "unexpected `=`: did you mean `==`?\n  params.x = 1\n           ^";
    assert_eq!(e.render("params.x = 1"), rendered);
    assert_eq!(Ref::Matrix("lr".into()).to_string(), "matrix.lr");
}

#[test]
fn explain_references_parse_and_display() {
    let expr = parse(
        "explain.top != 'customer_id' && explain.rank_shift <= 2 && current.explain.importance.age > explain.rank.age",
    )
    .unwrap();
    let got: Vec<String> = expr.refs().iter().map(|u| u.reference.to_string()).collect();
    assert_eq!(got, ["explain.top", "explain.rank_shift", "current.explain.importance.age", "explain.rank.age"]);
    assert_eq!(expr.refs()[2].reference, Ref::Explain { current: true, item: ExplainItem::Importance("age".into()) });
    assert_eq!(
        parse("explain.method").unwrap().refs()[0].reference,
        Ref::Explain { current: false, item: ExplainItem::Method }
    );
    for bad in ["explain.importance", "explain.topp", "current.explain.rank.a.b"] {
        let e = parse(bad).unwrap_err();
        assert!(e.message.contains("explain.importance.FEATURE"), "{bad}: {}", e.message);
    }
    assert_eq!(ExplainItem::RankShift.type_of(), Type::Int);
}
